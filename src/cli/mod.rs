//! The `headway` command line: Headscale's commands, flags and aliases, plus the old
//! spellings guides still use (rewritten by [`compat`] before clap parses them).
//!
//! Admin commands are gRPC clients of a running server ([`client`]); `serve` and
//! `configtest` load the config and start or check the server. The CLI never opens
//! the database and never imports `state` or `db`. Nothing here prompts: `--force`
//! is accepted for Headscale's sake and changes nothing.

mod admin;
mod api_keys;
mod bench;
mod client;
pub mod compat;
mod db;
mod import;
mod nodes;
pub mod output;
mod policy;
mod preauth_keys;
mod routes;
mod serve;
mod users;

use crate::config::Loaded;
use clap::{Args, Parser, Subcommand};
use output::Format;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Parses the process's command line and runs it.
pub fn run() -> ExitCode {
    let argv: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    run_with(&argv, &mut std::io::stderr())
}

/// Runs `argv` (program name first), writing notes and errors to `stderr`:
/// 0 on success, 1 on any error, 2 on a usage error (clap prints those itself).
pub fn run_with(argv: &[String], stderr: &mut dyn Write) -> ExitCode {
    drive(
        argv,
        &crate::config::load,
        Box::new(std::io::stdout()),
        stderr,
    )
}

/// How the config is loaded: [`crate::config::load`], or a test's own.
type Loader = dyn Fn(Option<&Path>) -> Result<Loaded, crate::config::ConfigError>;

/// [`run_with`] with the config loader and the admin commands' stdout handed in,
/// so tests can drive whole runs.
fn drive(argv: &[String], load: &Loader, out: Box<dyn Write>, stderr: &mut dyn Write) -> ExitCode {
    let rewritten = compat::rewrite(argv);
    for note in &rewritten.notes {
        let _ = writeln!(stderr, "note: {note}");
    }
    let cli = match Cli::try_parse_from(&rewritten.argv) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
    };
    let prog = compat::program_name(argv.first().map_or("headway", String::as_str));
    let format = cli.output;
    finish(execute(cli, &prog, load, out), format, stderr)
}

/// The exit code for a command's result, printing the error if there is one:
/// `error: …` for humans; `{"error": "…"}` in the asked format for machines, as Headscale does.
fn finish(result: anyhow::Result<()>, format: Format, stderr: &mut dyn Write) -> ExitCode {
    let Err(error) = result else {
        return ExitCode::SUCCESS;
    };
    let message = format!("{error:#}");
    let _ = if format.is_human() {
        writeln!(stderr, "error: {message}")
    } else {
        let value = output::Obj::new().str("error", &message).build();
        writeln!(stderr, "{}", output::machine(format, &value))
    };
    ExitCode::FAILURE
}

fn execute(cli: Cli, prog: &str, load: &Loader, out: Box<dyn Write>) -> anyhow::Result<()> {
    let format = cli.output;
    let config_flag = cli.config.as_deref();
    match cli.command {
        Command::Serve => serve::serve(config_flag),
        Command::Configtest => serve::configtest(config_flag),
        Command::Version => {
            serve::version(format);
            Ok(())
        }
        Command::Generate(GenerateCommand::PrivateKey) => {
            serve::generate_private_key(format);
            Ok(())
        }
        Command::Nodes(NodesCommand::Move(args)) => nodes::moved(&args, prog),
        Command::Bench(args) => bench::run(args),
        Command::BenchRelay(args) => bench::run_relay(args),
        Command::BenchCompile(args) => bench::run_compile(args),
        Command::BenchWorker => bench::run_worker(),
        Command::PolicyConformance(args) => policy::conformance(&args),
        Command::Db(command) => db::run(command, config_flag),
        Command::Import(command) => import::run(command, config_flag),
        admin => {
            // Config warnings belong to `serve` and `configtest`, not to every admin command.
            let loaded = load(config_flag)?;
            run_admin(admin, &loaded, format, prog, out)
        }
    }
}

/// Connects to the server `loaded` describes and runs one admin command.
fn run_admin(
    command: Command,
    loaded: &Loaded,
    format: Format,
    prog: &str,
    out: Box<dyn Write>,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let (channel, bearer) =
            client::connect(&loaded.config, loaded.path.as_deref(), prog).await?;
        let (client, headway) = client::clients(channel, bearer);
        let mut ctx = Ctx {
            format,
            prog: prog.to_owned(),
            client,
            headway,
            out,
        };
        dispatch(command, &mut ctx).await
    })
}

async fn dispatch(command: Command, ctx: &mut Ctx) -> anyhow::Result<()> {
    match command {
        Command::Health => serve::health(ctx).await,
        Command::Users(c) => users::run(c, ctx).await,
        Command::Nodes(c) => nodes::run(c, ctx).await,
        Command::Auth(c) => nodes::auth(c, ctx).await,
        Command::Routes(c) => routes::run(c, ctx).await,
        Command::Preauthkeys(c) => preauth_keys::run(c, ctx).await,
        Command::Apikeys(c) => api_keys::run(c, ctx).await,
        Command::Policy(c) => policy::run(c, ctx).await,
        Command::Admin(c) => admin::run(c, ctx).await,
        Command::Serve
        | Command::Configtest
        | Command::Version
        | Command::Generate(_)
        | Command::Bench(_)
        | Command::BenchRelay(_)
        | Command::BenchCompile(_)
        | Command::BenchWorker
        | Command::PolicyConformance(_)
        | Command::Db(_)
        | Command::Import(_) => {
            unreachable!("handled before connecting")
        }
    }
}

/// What an admin command needs: the connection, the output format, our name, stdout.
pub(crate) struct Ctx {
    pub format: Format,
    /// `headway`, or `headscale` when installed under that name; used in hints.
    pub prog: String,
    pub client: client::Client,
    /// headway's own calls (`headway.v1`).
    pub headway: client::OwnClient,
    pub out: Box<dyn Write>,
}

impl Ctx {
    /// Prints `human` in human mode, else `value` in the asked format.
    pub fn print(&mut self, value: impl FnOnce() -> output::Value, human: impl FnOnce() -> String) {
        let text = output::render(self.format, value, human);
        self.line(&text);
    }

    /// Prints text as it is, whatever the format (`policy get`, like Headscale).
    pub fn line(&mut self, text: &str) {
        let _ = writeln!(self.out, "{text}");
    }

    /// Confirms a mutation whose answer is empty: the text for humans, `{}` for machines.
    pub fn done(&mut self, message: &str) {
        self.print(|| output::Obj::new().build(), || message.to_owned());
    }
}

/// Unwraps a gRPC answer; a refusal becomes the server's message.
pub(crate) fn rpc<T>(answer: Result<tonic::Response<T>, tonic::Status>) -> anyhow::Result<T> {
    answer
        .map(tonic::Response::into_inner)
        .map_err(|status| anyhow::anyhow!(client::status_message(&status)))
}

/// A comma-list flag's values without the empty entries `-r ""` leaves.
pub(crate) fn non_empty(values: Vec<String>) -> Vec<String> {
    values
        .into_iter()
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .collect()
}

/// headway: a Headscale-compatible Tailscale coordination server.
#[derive(Parser, Debug)]
#[command(name = "headway", version, arg_required_else_help = true)]
pub struct Cli {
    /// Config file (default: $HEADWAY_CONFIG, $HEADSCALE_CONFIG, then the search path).
    #[arg(short = 'c', long = "config", global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Output format: empty for tables, or json, json-line, yaml.
    #[arg(
        short = 'o',
        long = "output",
        global = true,
        default_value = "",
        hide_default_value = true,
        value_parser = Format::parse
    )]
    pub output: Format,
    /// Accepted for Headscale compatibility; headway never asks for confirmation.
    #[arg(long, global = true)]
    pub force: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the server.
    Serve,
    /// Load and check the configuration, print its warnings, and exit.
    Configtest,
    /// Print the version.
    Version,
    /// Generate keys.
    #[command(subcommand, alias = "gen")]
    Generate(GenerateCommand),
    /// Ask the server whether it and its database are healthy (exit code 0 or 1).
    Health,
    /// Manage users (formerly namespaces).
    #[command(subcommand, visible_alias = "user", aliases = ["namespaces", "namespace", "ns"])]
    Users(UsersCommand),
    /// Manage nodes.
    #[command(subcommand, visible_alias = "node", aliases = ["machines", "machine"])]
    Nodes(NodesCommand),
    /// Approve or reject pending interactive logins.
    #[command(subcommand)]
    Auth(AuthCommand),
    /// Headscale 0.25's route commands (today: "nodes list-routes" / "nodes approve-routes").
    #[command(subcommand, visible_aliases = ["route", "r"])]
    Routes(RoutesCommand),
    /// Manage pre-auth keys.
    #[command(subcommand, visible_aliases = ["preauthkey", "authkey", "pre"])]
    Preauthkeys(PreauthkeysCommand),
    /// Manage API keys for remote CLI access.
    #[command(subcommand, visible_aliases = ["apikey", "api"])]
    Apikeys(ApikeysCommand),
    /// Manage the ACL policy.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// The database itself, with the server stopped (copy to PostgreSQL).
    #[command(subcommand)]
    Db(db::DbCommand),
    /// Move another control server's installation into headway (Headscale's).
    #[command(subcommand)]
    Import(import::ImportCommand),
    /// The web UI (/admin): sign-in links.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Run the load generator against a control server (headway or Headscale).
    Bench(bench::BenchArgs),
    /// Measure a DERP relay (headway's or Tailscale's derper): packets and bytes
    /// per second between client pairs, memory per connected client.
    BenchRelay(bench::BenchRelayArgs),
    /// Time applying a policy to a synthetic tailnet of N nodes (in process).
    BenchCompile(bench::BenchCompileArgs),
    /// One worker of a multi-process `bench --processes` (started by it).
    #[command(hide = true)]
    BenchWorker,
    /// Compare the policy engine with cases recorded from Tailscale's control
    /// plane (scripts/policy-conformance).
    #[command(hide = true)]
    PolicyConformance(policy::ConformanceArgs),
}

#[derive(Subcommand, Debug)]
pub enum AdminCommand {
    /// Print a one-time link that signs a browser in to the web UI.
    LoginLink {
        /// How long the link works (at most 1h).
        #[arg(short = 'e', long, default_value = "10m")]
        expiration: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum GenerateCommand {
    /// Print a new private key (privkey:…).
    PrivateKey,
}

/// `-i ID` or `-n NAME`, selecting one user.
#[derive(Args, Debug, Clone, Default)]
pub struct UserSelector {
    /// User id.
    #[arg(short = 'i', long = "identifier")]
    pub id: Option<u64>,
    /// User name.
    #[arg(short = 'n', long = "name")]
    pub name: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum UsersCommand {
    /// Create a user.
    #[command(visible_aliases = ["c", "new"])]
    Create {
        name: String,
        #[arg(short = 'd', long = "display-name")]
        display_name: Option<String>,
        #[arg(short = 'e', long)]
        email: Option<String>,
        #[arg(short = 'p', long = "picture-url")]
        picture_url: Option<String>,
    },
    /// List users, optionally filtered by id, name or email.
    #[command(visible_aliases = ["ls", "show"])]
    List {
        #[command(flatten)]
        select: UserSelector,
        #[arg(short = 'e', long)]
        email: Option<String>,
    },
    /// Rename a user.
    #[command(visible_alias = "mv")]
    Rename {
        #[command(flatten)]
        select: UserSelector,
        #[arg(short = 'r', long = "new-name", required = true)]
        new_name: String,
    },
    /// Delete a user.
    #[command(visible_alias = "delete")]
    Destroy {
        #[command(flatten)]
        select: UserSelector,
    },
}

/// `-i ID` of a node, required.
#[derive(Args, Debug, Clone)]
pub struct NodeId {
    /// Node id.
    #[arg(short = 'i', long = "identifier", required = true)]
    pub id: u64,
}

#[derive(Args, Debug, Clone)]
pub struct MoveArgs {
    #[arg(short = 'i', long = "identifier")]
    pub id: Option<u64>,
    #[arg(short = 'u', long = "user")]
    pub user: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum NodesCommand {
    /// List nodes.
    #[command(visible_aliases = ["ls", "show"])]
    List {
        /// Only this user's nodes (name or id).
        #[arg(short = 'u', long)]
        user: Option<String>,
    },
    /// Register a pending node (a registration id, nodekey:… or mkey:…) to a user.
    Register {
        /// User name or id.
        #[arg(short = 'u', long, required = true)]
        user: String,
        /// The key shown on the registration page.
        #[arg(short = 'k', long, required = true)]
        key: String,
    },
    /// Delete a node.
    #[command(visible_alias = "del")]
    Delete {
        #[command(flatten)]
        node: NodeId,
    },
    /// Expire (log out) a node, set its expiry, or disable expiry.
    #[command(visible_aliases = ["logout", "exp", "e"])]
    Expire {
        #[command(flatten)]
        node: NodeId,
        /// New expiry in RFC 3339 (e.g. 2025-08-27T10:00:00Z); empty means now.
        #[arg(short = 'e', long)]
        expiry: Option<String>,
        /// Never expire this node.
        #[arg(short = 'd', long, conflicts_with = "expiry")]
        disable: bool,
    },
    /// Rename a node (its MagicDNS name).
    Rename {
        #[command(flatten)]
        node: NodeId,
        new_name: String,
    },
    /// Replace a node's tags.
    #[command(visible_aliases = ["tags", "t"])]
    Tag {
        #[command(flatten)]
        node: NodeId,
        /// Tags, comma separated or repeated (tag:a,tag:b).
        #[arg(short = 't', long, value_delimiter = ',')]
        tags: Vec<String>,
    },
    /// Show the routes nodes announce, approve and serve.
    #[command(visible_aliases = ["lsr", "routes"])]
    ListRoutes {
        #[arg(short = 'i', long = "identifier")]
        id: Option<u64>,
    },
    /// Set a node's approved routes ("" clears them).
    ApproveRoutes {
        #[command(flatten)]
        node: NodeId,
        /// Prefixes, comma separated (10.0.0.0/8,192.168.0.0/24).
        #[arg(
            short = 'r',
            long,
            value_delimiter = ',',
            required = true,
            num_args = 1
        )]
        routes: Vec<String>,
    },
    /// Give nodes the addresses the configured prefixes call for.
    Backfillips,
    /// Removed in Headscale 0.28.
    #[command(alias = "mv", hide = true)]
    Move(MoveArgs),
}

#[derive(Subcommand, Debug)]
pub enum AuthCommand {
    /// Register a pending login to a user.
    Register {
        #[arg(long = "auth-id", required = true)]
        auth_id: String,
        /// User name or id.
        #[arg(short = 'u', long, required = true)]
        user: String,
    },
    /// Approve a pending authentication request.
    Approve {
        #[arg(long = "auth-id", required = true)]
        auth_id: String,
    },
    /// Reject a pending authentication request.
    Reject {
        #[arg(long = "auth-id", required = true)]
        auth_id: String,
    },
}

/// `-i NODE -r ROUTES -a` of `routes enable|disable`, in all their historical meanings.
#[derive(Args, Debug, Clone)]
pub struct RouteChange {
    /// Node id (Headscale 0.17 and older).
    #[arg(short = 'i', long = "identifier")]
    pub node: Option<u64>,
    /// Route ids (0.18–0.25) or prefixes (≤0.17), comma separated.
    #[arg(short = 'r', long = "route", alias = "routes", value_delimiter = ',')]
    pub routes: Vec<String>,
    /// Every route the node announces (≤0.17).
    #[arg(short = 'a', long = "all")]
    pub all: bool,
}

#[derive(Subcommand, Debug)]
pub enum RoutesCommand {
    /// List routes with their ids.
    #[command(visible_aliases = ["ls", "show"])]
    List {
        #[arg(short = 'i', long = "identifier")]
        node: Option<u64>,
    },
    /// Enable routes.
    Enable(RouteChange),
    /// Disable routes.
    Disable(RouteChange),
    /// Delete a route.
    Delete {
        #[arg(short = 'r', long = "route", required = true)]
        route: u64,
    },
}

#[derive(Subcommand, Debug)]
pub enum PreauthkeysCommand {
    /// Create a pre-auth key.
    #[command(visible_aliases = ["c", "new"])]
    Create {
        /// Owner (name or id); optional for tagged keys.
        #[arg(short = 'u', long)]
        user: Option<String>,
        #[arg(long)]
        reusable: bool,
        #[arg(long)]
        ephemeral: bool,
        /// Lifetime, e.g. 30m, 24h, 90d.
        #[arg(short = 'e', long, default_value = "1h")]
        expiration: String,
        /// Tags for the nodes it registers, comma separated or repeated.
        #[arg(long, value_delimiter = ',')]
        tags: Vec<String>,
    },
    /// List pre-auth keys.
    #[command(visible_aliases = ["ls", "show"])]
    List {
        /// Only this user's keys (name or id).
        #[arg(short = 'u', long)]
        user: Option<String>,
    },
    /// Expire a pre-auth key.
    #[command(visible_aliases = ["revoke", "exp", "e"])]
    Expire {
        #[arg(short = 'i', long = "id")]
        id: Option<u64>,
        /// The key itself (Headscale 0.27 and older).
        #[arg(conflicts_with = "id")]
        key: Option<String>,
        /// Owner of the key, to narrow the search (Headscale 0.27 and older).
        #[arg(short = 'u', long)]
        user: Option<String>,
    },
    /// Delete a pre-auth key.
    #[command(visible_aliases = ["del", "rm", "d"])]
    Delete {
        #[arg(short = 'i', long = "id", required = true)]
        id: u64,
    },
}

/// `-p PREFIX` or `-i ID`, selecting one API key.
#[derive(Args, Debug, Clone)]
pub struct ApiKeySelector {
    #[arg(short = 'p', long)]
    pub prefix: Option<String>,
    #[arg(short = 'i', long = "id")]
    pub id: Option<u64>,
}

#[derive(Subcommand, Debug)]
pub enum ApikeysCommand {
    /// Create an API key; it is shown once.
    #[command(visible_aliases = ["c", "new"])]
    Create {
        /// Lifetime, e.g. 30m, 24h, 90d.
        #[arg(short = 'e', long, default_value = "90d")]
        expiration: String,
    },
    /// List API keys.
    #[command(visible_aliases = ["ls", "show"])]
    List,
    /// Expire an API key.
    #[command(visible_aliases = ["revoke", "exp", "e"])]
    Expire(ApiKeySelector),
    /// Delete an API key.
    #[command(visible_aliases = ["remove", "del"])]
    Delete(ApiKeySelector),
}

/// Headscale's flag to skip the server; headway's CLI always goes through the server.
#[derive(Args, Debug, Clone)]
pub struct Bypass {
    #[arg(
        long = "bypass-server-and-access-database-directly",
        alias = "bypass-grpc-and-access-database-directly",
        hide = true
    )]
    pub bypass: bool,
}

#[derive(Subcommand, Debug)]
pub enum PolicyCommand {
    /// Print the current policy.
    #[command(visible_aliases = ["show", "view", "fetch"])]
    Get(Bypass),
    /// Replace the policy (policy.mode: database).
    #[command(visible_aliases = ["put", "update"])]
    Set {
        #[arg(short = 'f', long, required = true)]
        file: PathBuf,
        #[command(flatten)]
        bypass: Bypass,
    },
    /// Check a policy file against the server's users and nodes.
    Check {
        #[arg(short = 'f', long, required = true)]
        file: PathBuf,
        #[command(flatten)]
        bypass: Bypass,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(line.split_whitespace())
    }

    #[test]
    fn clap_tree_is_consistent() {
        <Cli as clap::CommandFactory>::command().debug_assert();
    }

    #[test]
    fn global_flags_parse_anywhere() {
        let cli = parse("headway nodes list -o json -c /tmp/c.yaml --force").unwrap();
        assert_eq!(cli.output, Format::Json);
        assert_eq!(
            cli.config.as_deref(),
            Some(std::path::Path::new("/tmp/c.yaml"))
        );
        assert!(cli.force);
        assert_eq!(
            parse("headway -o yaml users ls").unwrap().output,
            Format::Yaml
        );
        assert!(parse("headway -o xml users ls").is_err());
    }

    #[test]
    fn comma_lists_and_repeats_collect() {
        let cli = parse("headway preauthkeys create --tags tag:a,tag:b --tags tag:c").unwrap();
        let Command::Preauthkeys(PreauthkeysCommand::Create {
            tags, expiration, ..
        }) = cli.command
        else {
            panic!("wrong command")
        };
        assert_eq!(tags, ["tag:a", "tag:b", "tag:c"]);
        assert_eq!(expiration, "1h");

        let cli = Cli::try_parse_from(["headway", "nodes", "approve-routes", "-i", "1", "-r", ""])
            .unwrap();
        let Command::Nodes(NodesCommand::ApproveRoutes { routes, .. }) = cli.command else {
            panic!("wrong command")
        };
        assert!(non_empty(routes).is_empty(), "-r \"\" clears");
        assert_eq!(
            non_empty(vec!["10.0.0.0/8".into(), " ".into()]),
            ["10.0.0.0/8"]
        );
    }

    fn run_quiet(line: &str) -> (ExitCode, String) {
        let argv: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
        let mut stderr = Vec::new();
        let code = run_with(&argv, &mut stderr);
        (code, String::from_utf8(stderr).unwrap())
    }

    #[test]
    fn usage_errors_exit_2() {
        assert_eq!(run_quiet("headway nodes delete").0, ExitCode::from(2));
        assert_eq!(run_quiet("headway frobnicate").0, ExitCode::from(2));
    }

    #[test]
    fn removed_nodes_move_fails_without_a_server() {
        let (code, stderr) = run_quiet("headway nodes move -i 3 -u bob");
        assert_eq!(code, ExitCode::FAILURE);
        assert!(
            stderr.starts_with("error: \"nodes move\" was removed"),
            "{stderr}"
        );
    }

    #[test]
    fn server_not_running_names_the_socket_and_exits_1() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("headway.sock");
        let config = crate::config::Config {
            unix_socket: socket.clone(),
            ..crate::config::Config::default()
        };
        let loaded = Loaded {
            config,
            path: None,
            warnings: Vec::new(),
        };
        let cli = parse("headway users list").unwrap();
        let out = Box::new(std::io::sink());
        let result = run_admin(cli.command, &loaded, Format::Human, "headway", out);
        let mut stderr = Vec::new();
        assert_eq!(
            finish(result, Format::Human, &mut stderr),
            ExitCode::FAILURE
        );
        let stderr = String::from_utf8(stderr).unwrap();
        assert!(
            stderr.starts_with(&format!(
                "error: cannot reach the headway server on unix socket {}: ",
                socket.display()
            )),
            "{stderr}"
        );
        assert!(
            stderr.ends_with("\nIs it running? Start it with: headway serve\n"),
            "{stderr}"
        );
    }

    #[test]
    fn machine_formats_report_errors_as_json() {
        let mut stderr = Vec::new();
        let code = finish(
            Err(anyhow::anyhow!("user not found")),
            Format::JsonLine,
            &mut stderr,
        );
        assert_eq!(code, ExitCode::FAILURE);
        assert_eq!(
            String::from_utf8(stderr).unwrap(),
            "{\"error\":\"user not found\"}\n"
        );
    }
}
