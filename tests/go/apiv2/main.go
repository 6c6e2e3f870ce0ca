// Package main is headway-apiv2, the tests' stand-in for a user's tooling: a thin
// command line over Tailscale's official Go API client (tailscale.com/client/tailscale/v2)
// that tests/it/api_v2_client.rs runs against headway's /api/v2. It owns no logic of
// its own: each subcommand is one or two calls of the client, and what the client
// decoded is printed as one JSON document.
//
// Environment: HEADWAY_URL (the server, e.g. http://127.0.0.1:8080), and either
// HEADWAY_API_KEY (sent by the client as the HTTP Basic user name) or
// HEADWAY_OAUTH_CLIENT_ID and HEADWAY_OAUTH_CLIENT_SECRET (optionally
// HEADWAY_OAUTH_SCOPES, comma-separated), which sign in through /api/v2/oauth/token.
// The tailnet is always "-".
//
// Exit status: 0 with the answer on stdout; 2 when the server refused the call (an
// API error, or the OAuth token endpoint refused the client), with
// {"error": message, "status": HTTP status} on stdout; 1 for anything else (usage,
// network, an answer the client could not decode), with the error on stderr.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/oauth2"
	tailscale "tailscale.com/client/tailscale/v2"
)

const usage = `usage: headway-apiv2 COMMAND [ARGS]
  devices [--all]                  device ID [--all]             routes ID
  set-routes ID CIDR...            set-tags ID TAG...            set-name ID NAME
  set-key-expiry-disabled ID BOOL  authorize ID BOOL             delete-device ID
  create-key [--reusable] [--ephemeral] [--preauthorized] [--expiry-seconds N]
             [--tag TAG]... [--description D]
  create-oauth-client --scope S... --tag T... [--description D]
  keys        key ID        delete-key ID        users        user ID
  get-policy  get-policy-json  set-policy FILE [--etag E]  validate-policy FILE
  settings    update-settings JSON`

// list is a repeatable string flag (--tag a --tag b).
type list []string

func (l *list) String() string     { return strings.Join(*l, ",") }
func (l *list) Set(v string) error { *l = append(*l, v); return nil }

// options are every subcommand's flags; each subcommand reads the ones it documents.
type options struct {
	all, reusable, ephemeral, preauthorized bool
	expirySeconds                           int64
	tags, scopes                            list
	description, etag                       string
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, usage)
		os.Exit(1)
	}
	client, err := newClient()
	if err != nil {
		fail(err)
	}
	var opts options
	args, err := parse(os.Args[1], os.Args[2:], &opts)
	if err != nil {
		fail(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	answer, err := run(ctx, client, os.Args[1], args, &opts)
	if err != nil {
		fail(err)
	}
	emit(answer)
}

// newClient builds the client as a user would: base URL, tailnet "-", and an API key
// or OAuth client credentials from the environment (neither: no credentials at all).
func newClient() (*tailscale.Client, error) {
	base, err := url.Parse(strings.TrimRight(os.Getenv("HEADWAY_URL"), "/"))
	if err != nil || base.Host == "" {
		return nil, fmt.Errorf("HEADWAY_URL must be the server's base URL (got %q)", os.Getenv("HEADWAY_URL"))
	}
	client := &tailscale.Client{
		BaseURL:   base,
		Tailnet:   "-",
		UserAgent: "headway-apiv2",
		HTTP:      &http.Client{Timeout: 30 * time.Second},
		APIKey:    os.Getenv("HEADWAY_API_KEY"),
	}
	if id := os.Getenv("HEADWAY_OAUTH_CLIENT_ID"); id != "" {
		oauth := &tailscale.OAuth{ClientID: id, ClientSecret: os.Getenv("HEADWAY_OAUTH_CLIENT_SECRET")}
		if scopes := os.Getenv("HEADWAY_OAUTH_SCOPES"); scopes != "" {
			oauth.Scopes = strings.Split(scopes, ",")
		}
		client.Auth = oauth
	}
	return client, nil
}

// parse reads flags wherever they stand among the arguments (Go's flag package stops
// at the first positional one) and returns the positional arguments.
func parse(command string, args []string, opts *options) ([]string, error) {
	fs := flag.NewFlagSet(command, flag.ContinueOnError)
	fs.BoolVar(&opts.all, "all", false, "every device field (fields=all)")
	fs.BoolVar(&opts.reusable, "reusable", false, "a reusable auth key")
	fs.BoolVar(&opts.ephemeral, "ephemeral", false, "an ephemeral auth key")
	fs.BoolVar(&opts.preauthorized, "preauthorized", false, "a pre-authorized auth key")
	fs.Int64Var(&opts.expirySeconds, "expiry-seconds", 0, "auth key lifetime")
	fs.Var(&opts.tags, "tag", "a tag (repeatable)")
	fs.Var(&opts.scopes, "scope", "an OAuth scope (repeatable)")
	fs.StringVar(&opts.description, "description", "", "key description")
	fs.StringVar(&opts.etag, "etag", "", "If-Match for set-policy")
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return positional, nil
		}
		positional = append(positional, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

// run performs one subcommand and returns what to print.
func run(ctx context.Context, c *tailscale.Client, command string, args []string, o *options) (any, error) {
	want := func(n int, variadic bool) error {
		if len(args) < n || (!variadic && len(args) > n) {
			return fmt.Errorf("%s: wrong number of arguments\n%s", command, usage)
		}
		return nil
	}
	// device prints a device as the client reads it back after a change.
	device := func(err error) (any, error) {
		if err != nil {
			return nil, err
		}
		return c.Devices().Get(ctx, args[0])
	}
	switch command {
	case "devices":
		if o.all {
			return c.Devices().List(ctx, tailscale.WithFields(tailscale.IncludeFieldsAll))
		}
		return c.Devices().List(ctx)
	case "device":
		if err := want(1, false); err != nil {
			return nil, err
		}
		if o.all {
			return c.Devices().GetWithAllFields(ctx, args[0])
		}
		return c.Devices().Get(ctx, args[0])
	case "routes":
		if err := want(1, false); err != nil {
			return nil, err
		}
		return c.Devices().SubnetRoutes(ctx, args[0])
	case "set-routes":
		if err := want(1, true); err != nil {
			return nil, err
		}
		if err := c.Devices().SetSubnetRoutes(ctx, args[0], args[1:]); err != nil {
			return nil, err
		}
		return c.Devices().SubnetRoutes(ctx, args[0])
	case "set-tags":
		if err := want(1, true); err != nil {
			return nil, err
		}
		return device(c.Devices().SetTags(ctx, args[0], args[1:]))
	case "set-name":
		if err := want(2, false); err != nil {
			return nil, err
		}
		return device(c.Devices().SetName(ctx, args[0], args[1]))
	case "set-key-expiry-disabled", "authorize":
		if err := want(2, false); err != nil {
			return nil, err
		}
		on, err := strconv.ParseBool(args[1])
		if err != nil {
			return nil, fmt.Errorf("%s: %q is not true or false", command, args[1])
		}
		if command == "authorize" {
			return device(c.Devices().SetAuthorized(ctx, args[0], on))
		}
		return device(c.Devices().SetKey(ctx, args[0], tailscale.DeviceKey{KeyExpiryDisabled: on}))
	case "delete-device":
		if err := want(1, false); err != nil {
			return nil, err
		}
		return map[string]string{"deleted": args[0]}, c.Devices().Delete(ctx, args[0])
	case "create-key":
		if err := want(0, false); err != nil {
			return nil, err
		}
		var request tailscale.CreateKeyRequest
		create := &request.Capabilities.Devices.Create
		create.Reusable, create.Ephemeral, create.Preauthorized = o.reusable, o.ephemeral, o.preauthorized
		create.Tags = o.tags
		request.ExpirySeconds, request.Description = o.expirySeconds, o.description
		return c.Keys().CreateAuthKey(ctx, request)
	case "create-oauth-client":
		if err := want(0, false); err != nil {
			return nil, err
		}
		return c.Keys().CreateOAuthClient(ctx, tailscale.CreateOAuthClientRequest{
			Scopes: o.scopes, Tags: o.tags, Description: o.description,
		})
	case "keys":
		return c.Keys().List(ctx, true)
	case "key", "delete-key":
		if err := want(1, false); err != nil {
			return nil, err
		}
		if command == "delete-key" {
			return map[string]string{"deleted": args[0]}, c.Keys().Delete(ctx, args[0])
		}
		return c.Keys().Get(ctx, args[0])
	case "users":
		return c.Users().List(ctx, nil, nil)
	case "user":
		if err := want(1, false); err != nil {
			return nil, err
		}
		return c.Users().Get(ctx, args[0])
	case "get-policy":
		return rawPolicy(ctx, c)
	case "get-policy-json":
		acl, err := c.PolicyFile().Get(ctx)
		if err != nil {
			return nil, err
		}
		return map[string]any{"acl": acl, "etag": acl.ETag}, nil
	case "set-policy", "validate-policy":
		if err := want(1, false); err != nil {
			return nil, err
		}
		text, err := os.ReadFile(args[0])
		if err != nil {
			return nil, err
		}
		if command == "validate-policy" {
			return map[string]bool{"valid": true}, c.PolicyFile().Validate(ctx, string(text))
		}
		if err := c.PolicyFile().Set(ctx, string(text), o.etag); err != nil {
			return nil, err
		}
		return rawPolicy(ctx, c)
	case "settings":
		return c.TailnetSettings().Get(ctx)
	case "update-settings":
		if err := want(1, false); err != nil {
			return nil, err
		}
		var request tailscale.UpdateTailnetSettingsRequest
		decoder := json.NewDecoder(strings.NewReader(args[0]))
		decoder.DisallowUnknownFields()
		if err := decoder.Decode(&request); err != nil {
			return nil, fmt.Errorf("update-settings: %w", err)
		}
		if err := c.TailnetSettings().Update(ctx, request); err != nil {
			return nil, err
		}
		return c.TailnetSettings().Get(ctx)
	}
	return nil, fmt.Errorf("unknown command %q\n%s", command, usage)
}

// rawPolicy is the policy file as the server keeps it (HuJSON) and its ETag.
func rawPolicy(ctx context.Context, c *tailscale.Client) (any, error) {
	raw, err := c.PolicyFile().Raw(ctx)
	if err != nil {
		return nil, err
	}
	return map[string]string{"hujson": raw.HuJSON, "etag": raw.ETag}, nil
}

func emit(v any) {
	if err := json.NewEncoder(os.Stdout).Encode(v); err != nil {
		fmt.Fprintln(os.Stderr, "headway-apiv2: encoding the answer:", err)
		os.Exit(1)
	}
}

// fail reports err and exits: 2 with the status for a refusal by the server, 1 otherwise.
func fail(err error) {
	fmt.Fprintln(os.Stderr, "headway-apiv2:", err)
	var refused tailscale.APIError
	var token *oauth2.RetrieveError
	switch {
	case errors.As(err, &refused):
		answer := map[string]any{"error": refused.Message, "status": refused.Status}
		if len(refused.Data) > 0 {
			answer["data"] = refused.Data
		}
		emit(answer)
		os.Exit(2)
	case errors.As(err, &token) && token.Response != nil:
		message := token.ErrorCode
		if message == "" {
			message = strings.TrimSpace(string(token.Body))
		}
		emit(map[string]any{"error": message, "status": token.Response.StatusCode, "oauth": true})
		os.Exit(2)
	}
	os.Exit(1)
}
