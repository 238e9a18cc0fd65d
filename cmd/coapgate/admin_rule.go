package main

// Admin subcommands of forwarding rules ("coapgate rule ..."), thin
// clients of /api/v1/rules.

import (
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/coapgate/coapgate/internal/api"
	"github.com/coapgate/coapgate/internal/forward"
)

var adminRuleCmds = [][2]string{
	{"create", "create a forwarding rule from a JSON file"},
	{"list", "list forwarding rules"},
	{"get", "show a rule (secrets redacted)"},
	{"delete", "delete a rule with its cursors and dead letters"},
	{"enable", "start forwarding with a rule again"},
	{"disable", "stop a rule (its cursors stay)"},
	{"status", "show each action's cursor, lag, counters and last error"},
	{"deadletters", "list a rule's dead letters"},
	{"replay", "deliver dead letters again (all, or --id N ...)"},
}

// cmdRule runs "coapgate rule <command>".
func cmdRule(args []string, stdout, stderr io.Writer) int {
	return adminDispatch("rule", "Manage forwarding rules through the management API.", adminRuleCmds,
		map[string]func([]string, io.Writer, io.Writer) int{
			"create":      adminRuleCreate,
			"list":        adminRuleList,
			"get":         adminRuleGet,
			"delete":      adminRuleDelete,
			"enable":      func(a []string, o, e io.Writer) int { return adminRuleSetEnabled(a, o, e, true) },
			"disable":     func(a []string, o, e io.Writer) int { return adminRuleSetEnabled(a, o, e, false) },
			"status":      adminRuleStatus,
			"deadletters": adminRuleDeadLetters,
			"replay":      adminRuleReplay,
		}, args, stdout, stderr)
}

func adminRuleTable(w *tabwriter.Writer, r forward.Rule) {
	fmt.Fprintf(w, "id\t%s\n", r.ID)
	fmt.Fprintf(w, "name\t%s\n", r.Name)
	fmt.Fprintf(w, "enabled\t%t\n", r.Enabled)
	fmt.Fprintf(w, "topicFilter\t%s\n", r.TopicFilter)
	fmt.Fprintf(w, "productKey\t%s\n", adminOrDash(r.ProductKey))
	fmt.Fprintf(w, "deviceKey\t%s\n", adminOrDash(r.DeviceKey))
	fmt.Fprintf(w, "condition\t%s\n", adminOrDash(r.Condition))
	fmt.Fprintf(w, "maxAttempts\t%d\n", r.MaxAttempts)
	for i, a := range r.Actions {
		fmt.Fprintf(w, "action %d\t%s\n", i, adminActionSummary(a))
	}
	fmt.Fprintf(w, "createdAt\t%s\n", adminTime(r.CreatedAt))
}

// adminActionSummary shows an action on one line (URLs come redacted).
func adminActionSummary(a forward.Action) string {
	s := a.Type + " " + a.URL
	switch a.Type {
	case forward.ActionMQTT:
		s += " topic=" + a.Topic
	case forward.ActionNATS:
		s += " subject=" + a.Subject
		if a.JetStream {
			s += " jetstream"
		}
	case forward.ActionPostgres:
		s += " table=" + a.Table
	}
	return s
}

func adminRuleCreate(args []string, stdout, stderr io.Writer) int {
	c := newAdminCmd("rule create", "",
		"Create a forwarding rule from a JSON file (- for stdin): name, topicFilter, optional productKey, deviceKey, condition, maxAttempts, startFrom, and actions. See docs/api.md.",
		"coapgate rule create --file rule.json", stdout, stderr)
	file := c.fs.String("file", "", "rule JSON `file` (required; - reads stdin)")
	if _, code, ok := c.parse(args, 0, 0); !ok {
		return code
	}
	if *file == "" {
		return c.finish(adminUsagef("--file is required"))
	}
	var (
		b   []byte
		err error
	)
	if *file == "-" {
		b, err = io.ReadAll(os.Stdin)
	} else {
		b, err = os.ReadFile(*file)
	}
	if err != nil {
		return c.finish(adminUsagef("read rule: %v", err))
	}
	var req json.RawMessage
	if err := json.Unmarshal(b, &req); err != nil {
		return c.finish(adminUsagef("%s: not JSON: %v", *file, err))
	}
	body, err := c.call("POST", "/rules", nil, req)
	if err != nil {
		return c.finish(err)
	}
	return c.finish(adminOutput(c, body, adminRuleTable))
}

func adminRuleList(args []string, stdout, stderr io.Writer) int {
	c := newAdminCmd("rule list", "", "List forwarding rules.", "coapgate rule list", stdout, stderr)
	if _, code, ok := c.parse(args, 0, 0); !ok {
		return code
	}
	body, err := c.call("GET", "/rules", nil, nil)
	if err != nil {
		return c.finish(err)
	}
	return c.finish(adminOutput(c, body, func(w *tabwriter.Writer, l api.List[forward.Rule]) {
		fmt.Fprintln(w, "ID\tNAME\tENABLED\tFILTER\tACTIONS\tCONDITION")
		for _, r := range l.Items {
			types := make([]string, len(r.Actions))
			for i, a := range r.Actions {
				types[i] = a.Type
			}
			fmt.Fprintf(w, "%s\t%s\t%t\t%s\t%s\t%s\n", r.ID, r.Name, r.Enabled, r.TopicFilter,
				strings.Join(types, ","), adminOrDash(r.Condition))
		}
	}))
}

// adminRuleOne runs a command taking one RULE_ID.
func adminRuleOne(args []string, stdout, stderr io.Writer, path, summary string) (*adminCmd, string, int, bool) {
	c := newAdminCmd("rule "+path, "RULE_ID", summary, "coapgate rule "+path+" r_0123456789abcdef", stdout, stderr)
	return adminRuleParse(c, args)
}

func adminRuleParse(c *adminCmd, args []string) (*adminCmd, string, int, bool) {
	pos, code, ok := c.parse(args, 1, 1)
	if !ok {
		return c, "", code, false
	}
	return c, "/rules/" + adminEsc(pos[0]), 0, true
}

func adminRuleGet(args []string, stdout, stderr io.Writer) int {
	c, path, code, ok := adminRuleOne(args, stdout, stderr, "get", "Show a rule; secrets are redacted.")
	if !ok {
		return code
	}
	body, err := c.call("GET", path, nil, nil)
	if err != nil {
		return c.finish(err)
	}
	return c.finish(adminOutput(c, body, adminRuleTable))
}

func adminRuleDelete(args []string, stdout, stderr io.Writer) int {
	c, path, code, ok := adminRuleOne(args, stdout, stderr, "delete", "Delete a rule with its cursors and dead letters.")
	if !ok {
		return code
	}
	if _, err := c.call("DELETE", path, nil, nil); err != nil {
		return c.finish(err)
	}
	if !c.jsonOut {
		fmt.Fprintf(stdout, "deleted rule %s\n", strings.TrimPrefix(path, "/rules/"))
	}
	return adminOK
}

func adminRuleSetEnabled(args []string, stdout, stderr io.Writer, enabled bool) int {
	verb, summary := "disable", "Stop a rule; its cursors stay, so enabling it again resumes where it stopped."
	if enabled {
		verb, summary = "enable", "Start a disabled rule again, at its cursors."
	}
	c, path, code, ok := adminRuleOne(args, stdout, stderr, verb, summary)
	if !ok {
		return code
	}
	body, err := c.call("PATCH", path, nil, map[string]any{"enabled": enabled})
	if err != nil {
		return c.finish(err)
	}
	return c.finish(adminOutput(c, body, adminRuleTable))
}

func adminRuleStatus(args []string, stdout, stderr io.Writer) int {
	c, path, code, ok := adminRuleOne(args, stdout, stderr, "status", "Show each action's cursor, lag, counters and last error.")
	if !ok {
		return code
	}
	body, err := c.call("GET", path+"/status", nil, nil)
	if err != nil {
		return c.finish(err)
	}
	return c.finish(adminOutput(c, body, func(w *tabwriter.Writer, s api.RuleStatus) {
		fmt.Fprintln(w, "ACTION\tTYPE\tRUNNING\tCURSOR\tLAG\tDELIVERED\tFAILURES\tDEAD\tLAST ERROR")
		for _, a := range s.Actions {
			fmt.Fprintf(w, "%d\t%s\t%t\t%d\t%d\t%d\t%d\t%d\t%s\n", a.Action, a.Type, a.Running, a.Cursor, a.Lag,
				a.Delivered, a.Failures, a.DeadLetters, adminOrDash(a.LastError))
		}
	}))
}

func adminRuleDeadLetters(args []string, stdout, stderr io.Writer) int {
	c := newAdminCmd("rule deadletters", "RULE_ID", "List a rule's dead letters, oldest first.",
		"coapgate rule deadletters --limit 20 r_0123456789abcdef", stdout, stderr)
	limit := c.fs.Int("limit", 100, "page size (1..1000)")
	after := c.cursorFlag("a dead letter id")
	c, path, code, ok := adminRuleParse(c, args)
	if !ok {
		return code
	}
	q := url.Values{"limit": {strconv.Itoa(*limit)}}
	if *after != "" {
		q.Set("cursor", *after)
	}
	body, err := c.call("GET", path+"/deadletters", q, nil)
	if err != nil {
		return c.finish(err)
	}
	var cursor string
	err = adminOutput(c, body, func(w *tabwriter.Writer, l api.List[forward.DeadLetter]) {
		fmt.Fprintln(w, "ID\tACTION\tLOG ID\tTOPIC\tATTEMPTS\tUPDATED\tLAST ERROR")
		for _, d := range l.Items {
			fmt.Fprintf(w, "%d\t%d\t%d\t%s\t%d\t%s\t%s\n", d.ID, d.Action, d.LogID, d.Topic, d.Attempts,
				adminTime(d.UpdatedAt), d.LastError)
		}
		cursor = l.NextCursor
	})
	c.moreHint(cursor)
	return c.finish(err)
}

// adminIDs collects repeated --id flags.
type adminIDs []int64

func (a *adminIDs) String() string { return fmt.Sprint(*a) }
func (a *adminIDs) Set(s string) error {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return fmt.Errorf("not a dead letter id: %q", s)
	}
	*a = append(*a, n)
	return nil
}

func adminRuleReplay(args []string, stdout, stderr io.Writer) int {
	c := newAdminCmd("rule replay", "RULE_ID",
		"Deliver a rule's dead letters again now: the given ones, or all (up to 1000). Delivered ones are removed.",
		"coapgate rule replay --id 12 --id 13 r_0123456789abcdef", stdout, stderr)
	var ids adminIDs
	c.fs.Var(&ids, "id", "dead letter `id` to replay (repeatable; default all)")
	c, path, code, ok := adminRuleParse(c, args)
	if !ok {
		return code
	}
	body, err := c.call("POST", path+"/deadletters/replay", nil, map[string]any{"ids": []int64(ids)})
	if err != nil {
		return c.finish(err)
	}
	return c.finish(adminOutput(c, body, func(w *tabwriter.Writer, r forward.ReplayResult) {
		fmt.Fprintf(w, "delivered\t%d\nfailed\t%d\n", r.Delivered, r.Failed)
		for _, it := range r.Items {
			if !it.Delivered {
				fmt.Fprintf(w, "dead letter %d\t%s\n", it.ID, it.Error)
			}
		}
	}))
}
