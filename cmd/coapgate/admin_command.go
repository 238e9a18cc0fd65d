package main

// "coapgate command": downlink commands through the management API.

import (
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"text/tabwriter"

	"github.com/coapgate/coapgate/internal/api"
)

var adminCommandCmds = [][2]string{
	{"send", "queue a command for a device"},
	{"list", "list a device's commands, newest first"},
	{"get", "show one command with its reply"},
	{"cancel", "cancel a pending command"},
}

// cmdCommand runs "coapgate command <command>".
func cmdCommand(args []string, stdout, stderr io.Writer) int {
	return adminDispatch("command", "Send downlink commands to devices through the management API.", adminCommandCmds,
		map[string]func([]string, io.Writer, io.Writer) int{
			"send":   adminCommandSend,
			"list":   adminCommandList,
			"get":    adminCommandGet,
			"cancel": adminCommandCancel,
		}, args, stdout, stderr)
}

func adminCommandTable(w *tabwriter.Writer, c api.Command) {
	fmt.Fprintf(w, "id\t%s\n", c.ID)
	fmt.Fprintf(w, "device\t%s/%s\n", c.ProductKey, c.DeviceKey)
	fmt.Fprintf(w, "topic\t%s\n", c.Topic)
	fmt.Fprintf(w, "method\t%s\n", adminOrDash(c.Method))
	if len(c.Params) > 0 {
		fmt.Fprintf(w, "params\t%s\n", c.Params)
	}
	if c.Raw != "" {
		fmt.Fprintf(w, "raw\tbase64:%s\n", c.Raw)
	}
	fmt.Fprintf(w, "state\t%s\n", c.State)
	fmt.Fprintf(w, "createdAt\t%s\n", adminTime(c.CreatedAt))
	fmt.Fprintf(w, "expiresAt\t%s\n", adminTime(c.ExpiresAt))
	if c.DeliveredAt != nil {
		fmt.Fprintf(w, "deliveredAt\t%s (%s)\n", adminTime(*c.DeliveredAt), c.DeliveredVia)
	}
	if c.Reply != nil {
		fmt.Fprintf(w, "reply\tcode %d %s %s\n", c.Reply.Code, c.Reply.Message, c.Reply.Data)
	}
}

func adminCommandSend(args []string, stdout, stderr io.Writer) int {
	c := newAdminCmd("command send", "PRODUCT_KEY DEVICE_KEY",
		"Queue a command: --type setMeasurepoints|setProperties|invokeService (--service ID)|rawDown (--raw BASE64), --params JSON.",
		`coapgate command send --type setProperties --params '{"light":1}' --ttl 10m wm01 meter_0001`, stdout, stderr)
	typ := c.fs.String("type", "", "command `type`: setMeasurepoints, setProperties, invokeService or rawDown")
	service := c.fs.String("service", "", "service `id` (invokeService)")
	params := c.fs.String("params", "", "params as a JSON `object`")
	raw := c.fs.String("raw", "", "payload of a rawDown command (`base64`)")
	ttl := c.fs.String("ttl", "", "time to live, e.g. 90s or 24h (default: the server's commands.default_ttl)")
	pos, code, ok := c.parse(args, 2, 2)
	if !ok {
		return code
	}
	if *typ == "" {
		return c.finish(adminUsagef("command send: --type is required"))
	}
	body := map[string]any{"type": *typ}
	if *service != "" {
		body["service"] = *service
	}
	if *params != "" {
		if !json.Valid([]byte(*params)) {
			return c.finish(adminUsagef("command send: --params is not valid JSON"))
		}
		body["params"] = json.RawMessage(*params)
	}
	if *raw != "" {
		body["raw"] = *raw
	}
	if *ttl != "" {
		body["ttl"] = *ttl
	}
	out, err := c.call("POST", adminDevicePath(pos, "/commands"), nil, body)
	if err != nil {
		return c.finish(err)
	}
	return c.finish(adminOutput(c, out, adminCommandTable))
}

func adminCommandList(args []string, stdout, stderr io.Writer) int {
	c := newAdminCmd("command list", "PRODUCT_KEY DEVICE_KEY", "List a device's commands, newest first.",
		"coapgate command list --state pending wm01 meter_0001", stdout, stderr)
	state := c.fs.String("state", "", "only commands in this `state` (pending, delivered, replied, failed, expired, cancelled)")
	limit := c.fs.Int("limit", 100, "page size (1..1000)")
	cursor := c.cursorFlag("a command id")
	pos, code, ok := c.parse(args, 2, 2)
	if !ok {
		return code
	}
	q := url.Values{"limit": {strconv.Itoa(*limit)}}
	if *state != "" {
		q.Set("state", *state)
	}
	if *cursor != "" {
		q.Set("cursor", *cursor)
	}
	out, err := c.call("GET", adminDevicePath(pos, "/commands"), q, nil)
	if err != nil {
		return c.finish(err)
	}
	var next string
	err = adminOutput(c, out, func(w *tabwriter.Writer, l api.List[api.Command]) {
		fmt.Fprintln(w, "ID\tSTATE\tTOPIC\tCREATED\tEXPIRES\tREPLY")
		for _, m := range l.Items {
			reply := "-"
			if m.Reply != nil {
				reply = strconv.Itoa(m.Reply.Code)
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", m.ID, m.State, m.Topic, adminTime(m.CreatedAt), adminTime(m.ExpiresAt), reply)
		}
		next = l.NextCursor
	})
	c.moreHint(next)
	return c.finish(err)
}

func adminCommandGet(args []string, stdout, stderr io.Writer) int {
	c := newAdminCmd("command get", "PRODUCT_KEY DEVICE_KEY ID", "Show one command with its state and reply.",
		"coapgate command get wm01 meter_0001 42", stdout, stderr)
	pos, code, ok := c.parse(args, 3, 3)
	if !ok {
		return code
	}
	out, err := c.call("GET", adminDevicePath(pos, "/commands/"+adminEsc(pos[2])), nil, nil)
	if err != nil {
		return c.finish(err)
	}
	return c.finish(adminOutput(c, out, adminCommandTable))
}

func adminCommandCancel(args []string, stdout, stderr io.Writer) int {
	c := newAdminCmd("command cancel", "PRODUCT_KEY DEVICE_KEY ID", "Cancel a pending command.",
		"coapgate command cancel wm01 meter_0001 42", stdout, stderr)
	pos, code, ok := c.parse(args, 3, 3)
	if !ok {
		return code
	}
	out, err := c.call("DELETE", adminDevicePath(pos, "/commands/"+adminEsc(pos[2])), nil, nil)
	if err != nil {
		return c.finish(err)
	}
	return c.finish(adminOutput(c, out, adminCommandTable))
}
