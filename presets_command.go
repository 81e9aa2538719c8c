package linkgate

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"text/tabwriter"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"

	"github.com/linkgate/linkgate/presets"
)

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "linkgate-presets",
		Usage: "[--json]",
		Short: "Lists linkgate's catalogue of integration presets",
		Long: `
Lists the presets an integration can start from (preset <name> in the
Caddyfile, "preset": "<name>" in JSON): name, display name, authentication
method and the provider's documentation page the endpoints come from.

--json prints every preset in full as a JSON array, each object in the shape
of an integration's configuration with its "name" added.
`,
		CobraFunc: func(cmd *cobra.Command) {
			cmd.Flags().Bool("json", false, "Print the full presets as JSON")
			cmd.RunE = caddycmd.WrapCommandFuncForCobra(func(fl caddycmd.Flags) (int, error) {
				if err := writePresets(os.Stdout, fl.Bool("json")); err != nil {
					return 1, err
				}
				return 0, nil
			})
		},
	})
}

// writePresets writes the catalogue as a table, or as a JSON array.
func writePresets(w io.Writer, asJSON bool) error {
	names := presets.Names()
	entries := make([]map[string]any, 0, len(names))
	for _, n := range names {
		raw, _ := presets.Lookup(n)
		var e map[string]any
		if err := json.Unmarshal(raw, &e); err != nil {
			return fmt.Errorf("preset %s: %w", n, err)
		}
		e["name"] = n
		entries = append(entries, e)
	}
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(entries)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tDISPLAY NAME\tAUTH\tDOCS")
	for _, e := range entries {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", e["name"], e["display_name"], e["auth"], e["docs"])
	}
	return tw.Flush()
}
