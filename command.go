package linkgate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"

	"github.com/linkgate/linkgate/tokenstore"
)

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "linkgate-reseal",
		Usage: "--config <path> [--adapter <name>]",
		Short: "Re-seals stored credentials with the first encryption key",
		Long: `
Re-seals every secret linkgate keeps at rest (accounts' credentials and
pending connect states) with the first key of the integrated_accounts app's
encryption_keys, so that the keys after it can be removed.

To rotate a key: put the new key first and keep the old one after it, reload
the gateway, run this command with the same configuration, then remove the
old key and reload again. The command reads the storage and the keys from the
config, resolving {env.*} and {file.*} placeholders as the gateway does, and
may run while the gateway is serving. With SQLite and no key configured, it
uses the key generated in Caddy's data directory.

It prints how many secrets it re-sealed and exits non-zero if any could not
be opened with the configured keys; a failed run changes nothing.
`,
		CobraFunc: func(cmd *cobra.Command) {
			cmd.Flags().StringP("config", "c", "", "Configuration file with the integrated_accounts app (required)")
			cmd.Flags().StringP("adapter", "a", "", "Name of config adapter, e.g. caddyfile")
			cmd.RunE = caddycmd.WrapCommandFuncForCobra(cmdReseal)
		},
	})
}

// cmdReseal is the linkgate-reseal command.
func cmdReseal(fl caddycmd.Flags) (int, error) {
	// Ctrl-C rolls the re-seal back instead of leaving it to the kernel.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := runReseal(ctx, fl.String("config"), fl.String("adapter"), os.Stdout); err != nil {
		return caddy.ExitCodeFailedStartup, err
	}
	return caddy.ExitCodeSuccess, nil
}

// runReseal loads the config file, adapting it if need be, re-seals the
// store it names and reports the count on out.
func runReseal(ctx context.Context, configFile, adapter string, out io.Writer) error {
	if configFile == "" {
		return errors.New("--config is required: the configuration the gateway runs with")
	}
	cfgJSON, _, _, err := caddycmd.LoadConfig(configFile, adapter)
	if err != nil {
		return fmt.Errorf("loading %s: %w", configFile, err)
	}
	n, err := resealConfig(ctx, cfgJSON)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(out, "re-sealed %d secrets with the first encryption key; the keys after it can now be removed\n", n)
	return err
}

// resealer is the part of the SQL stores the command needs.
type resealer interface {
	Reseal(ctx context.Context) (int, error)
}

// resealConfig provisions the integrated_accounts app of a Caddy JSON config
// and re-seals its store.
func resealConfig(ctx context.Context, cfgJSON []byte) (n int, err error) {
	err = withConfiguredStore(cfgJSON, "re-seal", func(app *App, st *tokenstore.Cached) error {
		rs, ok := st.Inner().(resealer)
		if !ok {
			return fmt.Errorf("storage %s cannot re-seal", app.Storage.Driver)
		}
		n, err = rs.Reseal(ctx)
		if err != nil {
			return fmt.Errorf("re-sealing storage %s (nothing was changed): %w", app.Storage.Driver, err)
		}
		return nil
	})
	return n, err
}

// withConfiguredStore provisions the integrated_accounts app of a Caddy
// JSON config and runs fn with its store. The app is provisioned by Caddy
// exactly as the gateway provisions it, so placeholders, key parsing,
// validation and the generated SQLite key all behave as they do when
// serving. Only that app is loaded: nothing else in the config is started
// or needs to be valid. what names the command's work in errors.
func withConfiguredStore(cfgJSON []byte, what string, fn func(app *App, st *tokenstore.Cached) error) (err error) {
	var cfg struct {
		Apps map[string]json.RawMessage `json:"apps"`
	}
	if err := json.Unmarshal(cfgJSON, &cfg); err != nil {
		return fmt.Errorf("reading the config: %w", err)
	}
	raw := cfg.Apps["integrated_accounts"]
	if len(raw) == 0 || string(raw) == "null" {
		return fmt.Errorf("the config has no integrated_accounts app: nothing to %s", what)
	}
	cctx, err := caddy.ProvisionContext(&caddy.Config{
		AppsRaw: caddy.ModuleMap{"integrated_accounts": raw},
	})
	if err != nil {
		// Caddy has already cleaned up what it provisioned.
		return err
	}
	mod, err := cctx.AppIfConfigured("integrated_accounts")
	if err != nil {
		return err
	}
	app := mod.(*App)
	// Releasing the app's store closes it; nothing else was opened.
	defer func() {
		if cerr := app.Cleanup(); cerr != nil && err == nil {
			err = fmt.Errorf("closing storage %s: %w", app.Storage.Driver, cerr)
		}
	}()
	st, err := app.storeHold.open(app.logger)
	if err != nil {
		return err
	}
	return fn(app, st)
}
