package main

// Admin subcommands (product, device, messages): thin clients of the
// management HTTP API (internal/api), for operators at a shell.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/coapgate/coapgate/internal/api"
)

// Environment variables read by the admin subcommands.
const (
	adminEnvURL = "COAPGATE_API_URL"
	adminEnvKey = "COAPGATE_API_KEY"

	adminDefaultURL = "http://127.0.0.1:8080"
)

// Exit codes of the admin subcommands.
const (
	adminOK     = 0
	adminFailed = 1 // the API refused, or could not be reached
	adminUsage  = 2
)

// adminTimeout bounds one admin command.
const adminTimeout = 30 * time.Second

// adminUsageError is a command-line mistake (exit 2).
type adminUsageError struct{ msg string }

func (e *adminUsageError) Error() string { return e.msg }

func adminUsagef(format string, args ...any) error {
	return &adminUsageError{msg: fmt.Sprintf(format, args...)}
}

// adminCmd is one admin (sub-)subcommand: its flag set, the common flags,
// and where it writes.
type adminCmd struct {
	fs     *flag.FlagSet
	stdout io.Writer
	stderr io.Writer

	apiURL  string
	apiKey  string
	jsonOut bool
}

// newAdminCmd makes the flag set of "coapgate <path>" with the common flags
// and a usage text built from args (the positional synopsis), summary (one
// sentence) and example.
func newAdminCmd(path, args, summary, example string, stdout, stderr io.Writer) *adminCmd {
	c := &adminCmd{fs: flag.NewFlagSet("coapgate "+path, flag.ContinueOnError), stdout: stdout, stderr: stderr}
	c.fs.SetOutput(stderr)
	apiDefault := os.Getenv(adminEnvURL)
	if apiDefault == "" {
		apiDefault = adminDefaultURL
	}
	c.fs.StringVar(&c.apiURL, "api", apiDefault, "management API base `URL` (env "+adminEnvURL+")")
	// The default is not shown in help (it would print the key): it is
	// taken from the environment after parsing.
	c.fs.StringVar(&c.apiKey, "api-key", "", "API `key` (default: env "+adminEnvKey+"; prefer the env var, which keeps the key out of shell history)")
	c.fs.BoolVar(&c.jsonOut, "json", false, "print the raw JSON response instead of a table")
	c.fs.Usage = func() {
		w := c.fs.Output()
		fmt.Fprintf(w, "Usage: coapgate %s [flags] %s\n\n%s\n\nFlags:\n", path, args, summary)
		c.fs.PrintDefaults()
		fmt.Fprintf(w, "\nExample:\n  %s\n", example)
	}
	return c
}

// parse parses args, allowing flags after positional arguments, and checks
// the positional count. It returns the positional arguments, or an exit
// code when the command should stop (help shown, or a usage error).
func (c *adminCmd) parse(args []string, minPos, maxPos int) ([]string, int, bool) {
	for _, a := range args {
		if a == "--" {
			break
		}
		if a == "-h" || a == "-help" || a == "--help" {
			c.fs.SetOutput(c.stdout)
			c.fs.Usage()
			return nil, adminOK, false
		}
	}
	var pos []string
	for {
		if err := c.fs.Parse(args); err != nil {
			return nil, adminUsage, false // the flag package printed the error and usage
		}
		rest := c.fs.Args()
		if len(rest) == 0 {
			break
		}
		if consumed := len(args) - len(rest); consumed > 0 && args[consumed-1] == "--" {
			pos = append(pos, rest...)
			break
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
	if len(pos) < minPos || len(pos) > maxPos {
		fmt.Fprintf(c.stderr, "error: wrong number of arguments\n")
		c.fs.Usage()
		return nil, adminUsage, false
	}
	if c.apiKey == "" {
		c.apiKey = os.Getenv(adminEnvKey)
	}
	return pos, adminOK, true
}

// call sends one API request and returns the raw 2xx body.
func (c *adminCmd) call(method, path string, query url.Values, body any) ([]byte, error) {
	if c.apiKey == "" {
		return nil, adminUsagef("no API key: set %s (preferred) or pass --api-key", adminEnvKey)
	}
	ctx, cancel := context.WithTimeout(context.Background(), adminTimeout)
	defer cancel()
	cl := &api.Client{BaseURL: c.apiURL, Key: c.apiKey}
	return cl.Do(ctx, method, path, query, body)
}

// callNoKey sends one unauthenticated API request (health).
func (c *adminCmd) callNoKey(ctx context.Context, method, path string) ([]byte, error) {
	cl := &api.Client{BaseURL: c.apiURL, Key: c.apiKey}
	return cl.Do(ctx, method, path, nil, nil)
}

// finish prints err the way every admin command does and returns the exit
// code: "error: <code>: <message>" for API errors.
func (c *adminCmd) finish(err error) int {
	if err == nil {
		return adminOK
	}
	fmt.Fprintf(c.stderr, "error: %v\n", err)
	var ue *adminUsageError
	if errors.As(err, &ue) {
		return adminUsage
	}
	return adminFailed
}

// adminOutput prints body as indented JSON (--json) or through table.
func adminOutput[T any](c *adminCmd, body []byte, table func(w *tabwriter.Writer, v T)) error {
	if c.jsonOut {
		return adminPrintJSON(c.stdout, body)
	}
	var v T
	if err := json.Unmarshal(body, &v); err != nil {
		return fmt.Errorf("decode response: %w", err)
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 8, 2, ' ', 0)
	table(tw, v)
	return tw.Flush()
}

func adminPrintJSON(w io.Writer, body []byte) error {
	if len(body) == 0 {
		return nil
	}
	var b bytes.Buffer
	if err := json.Indent(&b, body, "", "  "); err != nil {
		return fmt.Errorf("decode response: %w", err)
	}
	b.WriteByte('\n')
	_, err := w.Write(b.Bytes())
	return err
}

// moreHint tells the user how to get the next page.
func (c *adminCmd) moreHint(cursor string) {
	if cursor != "" && !c.jsonOut {
		fmt.Fprintf(c.stderr, "more results: repeat with --cursor %s\n", cursor)
	}
}

// cursorFlag registers --cursor (the nextCursor of the previous page) and
// --after, its older name, on the same value.
func (c *adminCmd) cursorFlag(what string) *string {
	v := new(string)
	c.fs.StringVar(v, "cursor", "", "continue after this `cursor` ("+what+", printed by the previous page)")
	c.fs.StringVar(v, "after", "", "same as --cursor (older name)")
	return v
}

func adminEsc(s string) string { return url.PathEscape(s) }

func adminTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

func adminOrDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func adminLifetime(secs int64) string {
	if secs == 0 {
		return "default"
	}
	return (time.Duration(secs) * time.Second).String()
}

// adminGroupUsage prints a group's usage (product, device).
func adminGroupUsage(w io.Writer, group, summary string, subs [][2]string) {
	fmt.Fprintf(w, "Usage: coapgate %s <command> [flags] [arguments]\n\n%s\n\nCommands:\n", group, summary)
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	for _, s := range subs {
		fmt.Fprintf(tw, "  %s\t%s\n", s[0], s[1])
	}
	tw.Flush()
	fmt.Fprintf(w, "\nRun \"coapgate %s <command> --help\" for a command's flags.\n"+
		"The API URL and key default to $%s and $%s.\n", group, adminEnvURL, adminEnvKey)
}

// adminDispatch runs the named subcommand of a group.
func adminDispatch(group, summary string, subs [][2]string, run map[string]func([]string, io.Writer, io.Writer) int,
	args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		adminGroupUsage(stderr, group, summary, subs)
		return adminUsage
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		adminGroupUsage(stdout, group, summary, subs)
		return adminOK
	}
	f, ok := run[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "error: unknown command %q\n\n", group+" "+args[0])
		adminGroupUsage(stderr, group, summary, subs)
		return adminUsage
	}
	return f(args[1:], stdout, stderr)
}

// ---- product ----

var adminProductCmds = [][2]string{
	{"create", "create a product (prints its secret once)"},
	{"list", "list products"},
	{"get", "show one product"},
	{"update", "change a product's name, data format, lifetime or dynamic registration"},
	{"delete", "delete a product without devices"},
}

// cmdProduct runs "coapgate product <command>".
func cmdProduct(args []string, stdout, stderr io.Writer) int {
	return adminDispatch("product", "Manage products through the management API.", adminProductCmds,
		map[string]func([]string, io.Writer, io.Writer) int{
			"create": adminProductCreate,
			"list":   adminProductList,
			"get":    adminProductGet,
			"update": adminProductUpdate,
			"delete": adminProductDelete,
		}, args, stdout, stderr)
}

func adminProductTable(w *tabwriter.Writer, p api.Product) {
	fmt.Fprintf(w, "productKey\t%s\n", p.ProductKey)
	if p.ProductSecret != "" {
		fmt.Fprintf(w, "productSecret\t%s\n", p.ProductSecret)
	}
	fmt.Fprintf(w, "name\t%s\n", p.Name)
	fmt.Fprintf(w, "dataFormat\t%s\n", p.DataFormat)
	fmt.Fprintf(w, "dynamicRegistration\t%t\n", p.DynamicRegistration)
	fmt.Fprintf(w, "onlineLifetime\t%s\n", adminLifetime(p.OnlineLifetimeSecs))
	fmt.Fprintf(w, "createdAt\t%s\n", adminTime(p.CreatedAt))
}

// adminLifetimeSecs converts a --online-lifetime flag to whole seconds.
func adminLifetimeSecs(d time.Duration) (int64, error) {
	if d < 0 || d%time.Second != 0 {
		return 0, adminUsagef("--online-lifetime must be whole seconds, e.g. 10m or 3600s")
	}
	return int64(d / time.Second), nil
}

func adminProductCreate(args []string, stdout, stderr io.Writer) int {
	c := newAdminCmd("product create", "[PRODUCT_KEY]",
		"Create a product; PRODUCT_KEY is generated when omitted. The product secret is printed once: store it.",
		"coapgate product create --name 'Water meters' --dynamic-registration wm01", stdout, stderr)
	name := c.fs.String("name", "", "product `name` (required)")
	secret := c.fs.String("secret", "", "product `secret` to import (default: generated; 8..128 printable characters)")
	dynreg := c.fs.Bool("dynamic-registration", false, "let devices of this product register with the product secret (secureMode 3)")
	format := c.fs.String("data-format", "json", "default payload `format`: json or cbor")
	lifetime := c.fs.Duration("online-lifetime", 0, "how long a device stays online after a message (0: gateway default)")
	pos, code, ok := c.parse(args, 0, 1)
	if !ok {
		return code
	}
	if *name == "" {
		return c.finish(adminUsagef("--name is required"))
	}
	secs, err := adminLifetimeSecs(*lifetime)
	if err != nil {
		return c.finish(err)
	}
	req := map[string]any{"name": *name, "dynamicRegistration": *dynreg, "dataFormat": *format, "onlineLifetimeSeconds": secs}
	if len(pos) == 1 {
		req["productKey"] = pos[0]
	}
	if *secret != "" {
		req["productSecret"] = *secret
	}
	body, err := c.call("POST", "/products", nil, req)
	if err != nil {
		return c.finish(err)
	}
	if !c.jsonOut {
		fmt.Fprintln(stderr, "note: the product secret is shown only now; store it safely")
	}
	return c.finish(adminOutput(c, body, adminProductTable))
}

func adminProductList(args []string, stdout, stderr io.Writer) int {
	c := newAdminCmd("product list", "",
		"List products ordered by product key, one page at a time.",
		"coapgate product list --limit 20", stdout, stderr)
	limit := c.fs.Int("limit", 100, "page size (1..1000)")
	after := c.cursorFlag("a product key")
	if _, code, ok := c.parse(args, 0, 0); !ok {
		return code
	}
	q := url.Values{"limit": {strconv.Itoa(*limit)}}
	if *after != "" {
		q.Set("cursor", *after)
	}
	body, err := c.call("GET", "/products", q, nil)
	if err != nil {
		return c.finish(err)
	}
	var cursor string
	err = adminOutput(c, body, func(w *tabwriter.Writer, l api.List[api.Product]) {
		fmt.Fprintln(w, "PRODUCT KEY\tNAME\tFORMAT\tDYNAMIC REG\tLIFETIME\tCREATED")
		for _, p := range l.Items {
			fmt.Fprintf(w, "%s\t%s\t%s\t%t\t%s\t%s\n", p.ProductKey, p.Name, p.DataFormat,
				p.DynamicRegistration, adminLifetime(p.OnlineLifetimeSecs), adminTime(p.CreatedAt))
		}
		cursor = l.NextCursor
	})
	c.moreHint(cursor)
	return c.finish(err)
}

func adminProductGet(args []string, stdout, stderr io.Writer) int {
	c := newAdminCmd("product get", "PRODUCT_KEY", "Show one product (never its secret).",
		"coapgate product get wm01", stdout, stderr)
	pos, code, ok := c.parse(args, 1, 1)
	if !ok {
		return code
	}
	body, err := c.call("GET", "/products/"+adminEsc(pos[0]), nil, nil)
	if err != nil {
		return c.finish(err)
	}
	return c.finish(adminOutput(c, body, adminProductTable))
}

func adminProductUpdate(args []string, stdout, stderr io.Writer) int {
	c := newAdminCmd("product update", "PRODUCT_KEY",
		"Change the given fields of a product; fields whose flag is absent stay as they are.",
		"coapgate product update --dynamic-registration=false --online-lifetime 30m wm01", stdout, stderr)
	name := c.fs.String("name", "", "new product `name`")
	dynreg := c.fs.Bool("dynamic-registration", false, "allow (or, with =false, forbid) dynamic registration")
	format := c.fs.String("data-format", "", "new default payload `format`: json or cbor")
	lifetime := c.fs.Duration("online-lifetime", 0, "new online lifetime (0: gateway default)")
	pos, code, ok := c.parse(args, 1, 1)
	if !ok {
		return code
	}
	req := map[string]any{}
	var err error
	c.fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "name":
			req["name"] = *name
		case "dynamic-registration":
			req["dynamicRegistration"] = *dynreg
		case "data-format":
			req["dataFormat"] = *format
		case "online-lifetime":
			var secs int64
			if secs, err = adminLifetimeSecs(*lifetime); err == nil {
				req["onlineLifetimeSeconds"] = secs
			}
		}
	})
	if err != nil {
		return c.finish(err)
	}
	if len(req) == 0 {
		return c.finish(adminUsagef("nothing to update: give at least one of --name, --dynamic-registration, --data-format, --online-lifetime"))
	}
	body, err := c.call("PATCH", "/products/"+adminEsc(pos[0]), nil, req)
	if err != nil {
		return c.finish(err)
	}
	return c.finish(adminOutput(c, body, adminProductTable))
}

func adminProductDelete(args []string, stdout, stderr io.Writer) int {
	c := newAdminCmd("product delete", "PRODUCT_KEY",
		"Delete a product; it must have no devices left.",
		"coapgate product delete wm01", stdout, stderr)
	pos, code, ok := c.parse(args, 1, 1)
	if !ok {
		return code
	}
	if _, err := c.call("DELETE", "/products/"+adminEsc(pos[0]), nil, nil); err != nil {
		return c.finish(err)
	}
	if !c.jsonOut {
		fmt.Fprintf(stdout, "deleted product %s\n", pos[0])
	}
	return adminOK
}

// ---- device ----

var adminDeviceCmds = [][2]string{
	{"create", "create a device (prints its secret once)"},
	{"list", "list devices, of one product or all"},
	{"get", "show a device and its online status"},
	{"disable", "refuse the device's connections"},
	{"enable", "accept the device's connections again"},
	{"delete", "delete a device (its messages remain)"},
	{"revoke-tokens", "invalidate every token issued to the device"},
	{"rotate-secret", "give the device a new secret (prints it once) and revoke its tokens"},
}

// cmdDevice runs "coapgate device <command>".
func cmdDevice(args []string, stdout, stderr io.Writer) int {
	return adminDispatch("device", "Manage devices through the management API.", adminDeviceCmds,
		map[string]func([]string, io.Writer, io.Writer) int{
			"create":        adminDeviceCreate,
			"list":          adminDeviceList,
			"get":           adminDeviceGet,
			"disable":       func(a []string, o, e io.Writer) int { return adminDeviceSetEnabled(a, o, e, false) },
			"enable":        func(a []string, o, e io.Writer) int { return adminDeviceSetEnabled(a, o, e, true) },
			"delete":        adminDeviceDelete,
			"revoke-tokens": adminDeviceRevokeTokens,
			"rotate-secret": adminDeviceRotateSecret,
		}, args, stdout, stderr)
}

func adminDeviceTable(w *tabwriter.Writer, d api.Device) {
	fmt.Fprintf(w, "productKey\t%s\n", d.ProductKey)
	fmt.Fprintf(w, "deviceKey\t%s\n", d.DeviceKey)
	if d.DeviceSecret != "" {
		fmt.Fprintf(w, "deviceSecret\t%s\n", d.DeviceSecret)
	}
	fmt.Fprintf(w, "assetId\t%s\n", adminOrDash(d.AssetID))
	fmt.Fprintf(w, "enabled\t%t\n", d.Enabled)
	fmt.Fprintf(w, "online\t%t\n", d.Online)
	fmt.Fprintf(w, "lastSeenAt\t%s\n", adminTime(d.LastSeenAt))
	fmt.Fprintf(w, "lastAddress\t%s\n", adminOrDash(d.LastAddress))
	fmt.Fprintf(w, "transport\t%s\n", adminOrDash(d.Transport))
	fmt.Fprintf(w, "lifetime\t%s\n", adminLifetime(d.LifetimeSeconds))
	fmt.Fprintf(w, "tokenGeneration\t%d\n", d.TokenGeneration)
	fmt.Fprintf(w, "createdAt\t%s\n", adminTime(d.CreatedAt))
}

func adminDevicePath(pos []string, suffix string) string {
	return "/devices/" + adminEsc(pos[0]) + "/" + adminEsc(pos[1]) + suffix
}

func adminDeviceCreate(args []string, stdout, stderr io.Writer) int {
	c := newAdminCmd("device create", "PRODUCT_KEY [DEVICE_KEY]",
		"Create a device of a product; DEVICE_KEY is generated when omitted. The device secret is printed once: store it.",
		"coapgate device create --asset-id pump-7 wm01 meter_0001", stdout, stderr)
	secret := c.fs.String("secret", "", "device `secret` to import (default: generated; 8..128 printable characters)")
	asset := c.fs.String("asset-id", "", "asset `ID` reported at activation")
	disabled := c.fs.Bool("disabled", false, "create the device disabled")
	pos, code, ok := c.parse(args, 1, 2)
	if !ok {
		return code
	}
	req := map[string]any{"productKey": pos[0], "enabled": !*disabled}
	if len(pos) == 2 {
		req["deviceKey"] = pos[1]
	}
	if *secret != "" {
		req["deviceSecret"] = *secret
	}
	if *asset != "" {
		req["assetId"] = *asset
	}
	body, err := c.call("POST", "/devices", nil, req)
	if err != nil {
		return c.finish(err)
	}
	if !c.jsonOut {
		fmt.Fprintln(stderr, "note: the device secret is shown only now; store it safely")
	}
	return c.finish(adminOutput(c, body, adminDeviceTable))
}

func adminDeviceList(args []string, stdout, stderr io.Writer) int {
	c := newAdminCmd("device list", "[PRODUCT_KEY]",
		"List the devices of a product, or of every product, one page at a time.",
		"coapgate device list --limit 50 wm01", stdout, stderr)
	limit := c.fs.Int("limit", 100, "page size (1..1000)")
	after := c.cursorFlag("a device key, or productKey/deviceKey")
	pos, code, ok := c.parse(args, 0, 1)
	if !ok {
		return code
	}
	q := url.Values{"limit": {strconv.Itoa(*limit)}}
	if len(pos) == 1 {
		q.Set("productKey", pos[0])
	}
	if *after != "" {
		q.Set("cursor", *after)
	}
	body, err := c.call("GET", "/devices", q, nil)
	if err != nil {
		return c.finish(err)
	}
	var cursor string
	err = adminOutput(c, body, func(w *tabwriter.Writer, l api.List[api.Device]) {
		fmt.Fprintln(w, "PRODUCT KEY\tDEVICE KEY\tENABLED\tONLINE\tLAST SEEN\tADDRESS\tASSET ID")
		for _, d := range l.Items {
			fmt.Fprintf(w, "%s\t%s\t%t\t%t\t%s\t%s\t%s\n", d.ProductKey, d.DeviceKey, d.Enabled, d.Online,
				adminTime(d.LastSeenAt), adminOrDash(d.LastAddress), adminOrDash(d.AssetID))
		}
		cursor = l.NextCursor
	})
	c.moreHint(cursor)
	return c.finish(err)
}

func adminDeviceGet(args []string, stdout, stderr io.Writer) int {
	c := newAdminCmd("device get", "PRODUCT_KEY DEVICE_KEY",
		"Show a device with its online status (never its secret).",
		"coapgate device get wm01 meter_0001", stdout, stderr)
	pos, code, ok := c.parse(args, 2, 2)
	if !ok {
		return code
	}
	body, err := c.call("GET", adminDevicePath(pos, ""), nil, nil)
	if err != nil {
		return c.finish(err)
	}
	return c.finish(adminOutput(c, body, adminDeviceTable))
}

func adminDeviceSetEnabled(args []string, stdout, stderr io.Writer, enabled bool) int {
	verb, summary := "disable", "Disable a device: the gateway refuses its handshakes, authentications and messages."
	if enabled {
		verb, summary = "enable", "Enable a disabled device again."
	}
	c := newAdminCmd("device "+verb, "PRODUCT_KEY DEVICE_KEY", summary,
		"coapgate device "+verb+" wm01 meter_0001", stdout, stderr)
	pos, code, ok := c.parse(args, 2, 2)
	if !ok {
		return code
	}
	body, err := c.call("PATCH", adminDevicePath(pos, ""), nil, map[string]any{"enabled": enabled})
	if err != nil {
		return c.finish(err)
	}
	return c.finish(adminOutput(c, body, adminDeviceTable))
}

func adminDeviceDelete(args []string, stdout, stderr io.Writer) int {
	c := newAdminCmd("device delete", "PRODUCT_KEY DEVICE_KEY",
		"Delete a device; its stored messages remain.",
		"coapgate device delete wm01 meter_0001", stdout, stderr)
	pos, code, ok := c.parse(args, 2, 2)
	if !ok {
		return code
	}
	if _, err := c.call("DELETE", adminDevicePath(pos, ""), nil, nil); err != nil {
		return c.finish(err)
	}
	if !c.jsonOut {
		fmt.Fprintf(stdout, "deleted device %s/%s\n", pos[0], pos[1])
	}
	return adminOK
}

func adminDeviceRevokeTokens(args []string, stdout, stderr io.Writer) int {
	c := newAdminCmd("device revoke-tokens", "PRODUCT_KEY DEVICE_KEY",
		"Invalidate every token issued to a device; it must authenticate again.",
		"coapgate device revoke-tokens wm01 meter_0001", stdout, stderr)
	pos, code, ok := c.parse(args, 2, 2)
	if !ok {
		return code
	}
	body, err := c.call("POST", adminDevicePath(pos, "/revoke-tokens"), nil, nil)
	if err != nil {
		return c.finish(err)
	}
	return c.finish(adminOutput(c, body, adminDeviceTable))
}

func adminDeviceRotateSecret(args []string, stdout, stderr io.Writer) int {
	c := newAdminCmd("device rotate-secret", "PRODUCT_KEY DEVICE_KEY",
		"Give a device a new random secret, printed once, and revoke its tokens.",
		"coapgate device rotate-secret wm01 meter_0001", stdout, stderr)
	pos, code, ok := c.parse(args, 2, 2)
	if !ok {
		return code
	}
	body, err := c.call("POST", adminDevicePath(pos, "/rotate-secret"), nil, nil)
	if err != nil {
		return c.finish(err)
	}
	if !c.jsonOut {
		fmt.Fprintln(stderr, "note: the new device secret is shown only now; store it safely")
	}
	return c.finish(adminOutput(c, body, adminDeviceTable))
}

// ---- messages ----

// adminPayloadWidth bounds the payload column of the messages table.
const adminPayloadWidth = 60

// cmdMessages runs "coapgate messages".
func cmdMessages(args []string, stdout, stderr io.Writer) int {
	c := newAdminCmd("messages", "[PRODUCT_KEY [DEVICE_KEY]]",
		"List stored uplink messages, oldest first unless --desc; --from and --to take RFC 3339 times or unix milliseconds.",
		"coapgate messages --from 2025-01-01T00:00:00Z --desc --limit 20 wm01 meter_0001", stdout, stderr)
	from := c.fs.String("from", "", "only messages received at or after this `time`")
	to := c.fs.String("to", "", "only messages received before this `time`")
	limit := c.fs.Int("limit", 100, "page size (1..1000)")
	after := c.cursorFlag("a message id")
	desc := c.fs.Bool("desc", false, "newest first")
	pos, code, ok := c.parse(args, 0, 2)
	if !ok {
		return code
	}
	q := url.Values{"limit": {strconv.Itoa(*limit)}}
	for k, v := range map[string]string{"from": *from, "to": *to, "cursor": *after} {
		if v != "" {
			q.Set(k, v)
		}
	}
	if *desc {
		q.Set("order", "desc")
	}
	// An unknown product or device is an error (404, exit 1) as in the
	// API, not an empty table: the device route answers 404 itself, a
	// product is looked up first.
	path := "/messages"
	switch len(pos) {
	case 2:
		path = "/devices/" + adminEsc(pos[0]) + "/" + adminEsc(pos[1]) + "/messages"
	case 1:
		if _, err := c.call("GET", "/products/"+adminEsc(pos[0]), nil, nil); err != nil {
			return c.finish(err)
		}
		q.Set("productKey", pos[0])
	}
	body, err := c.call("GET", path, q, nil)
	if err != nil {
		return c.finish(err)
	}
	var cursor string
	err = adminOutput(c, body, func(w *tabwriter.Writer, l api.List[api.Message]) {
		fmt.Fprintln(w, "ID\tRECEIVED\tDEVICE\tTOPIC\tFORMAT\tPAYLOAD")
		for _, m := range l.Items {
			fmt.Fprintf(w, "%s\t%s\t%s/%s\t%s\t%d\t%s\n", m.ID, m.ReceivedAt.UTC().Format(time.RFC3339Nano),
				m.ProductKey, m.DeviceKey, m.Topic, m.ContentFormat, adminPayloadColumn(m))
		}
		cursor = l.NextCursor
	})
	c.moreHint(cursor)
	return c.finish(err)
}

// adminPayloadColumn shows a message payload on one line: its JSON form when
// the API gave one, else base64 prefixed "base64:", cut to adminPayloadWidth.
func adminPayloadColumn(m api.Message) string {
	s := "base64:" + m.PayloadBase64
	if len(m.Payload) > 0 {
		var b bytes.Buffer
		if err := json.Compact(&b, m.Payload); err == nil {
			s = b.String()
		}
	} else if m.PayloadBase64 == "" {
		return "-"
	}
	// Tabs and newlines would break the table.
	s = strings.Map(func(r rune) rune {
		if r == '\t' || r == '\n' || r == '\r' {
			return ' '
		}
		return r
	}, s)
	if r := []rune(s); len(r) > adminPayloadWidth {
		s = string(r[:adminPayloadWidth-1]) + "…"
	}
	return s
}
