//! Old command spellings from Headscale guides, rewritten to today's before clap sees them.
//!
//! A pure function of argv: [`rewrite`] returns the new argv and one short note per old
//! spelling it met (see `headscale-surface.md` §1.3 for when each spelling lived).
//! Like cobra, it also lets flags stand before the subcommand they belong to
//! (`headway -n default nodes register …`) by moving them after it.
//! Knows words and flags only; the commands that need the server to finish a
//! translation (`routes enable -i N -r CIDR`) do that part themselves.

/// The argv clap will parse, and the notes to print on stderr before running it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rewritten {
    pub argv: Vec<String>,
    /// One line per old spelling, without the `note: ` prefix.
    pub notes: Vec<String>,
}

/// Rewrites `argv` (program name first). Modern spellings come back unchanged,
/// apart from `-i=6` being split into `-i 6`, with no notes.
pub fn rewrite(argv: &[String]) -> Rewritten {
    let Some((prog, args)) = argv.split_first() else {
        return Rewritten {
            argv: argv.to_vec(),
            notes: Vec::new(),
        };
    };
    let mut tokens = split_equals(args);
    drop_ctl(&mut tokens);
    let name = program_name(prog);
    let mut items = scan(&tokens);
    let reasons = translate(&mut items, &name);
    let new_args = assemble(items);
    let changed = new_args != tokens;
    let shown = command_line(&name, &new_args);
    let last = reasons.len().saturating_sub(1);
    let notes = reasons
        .into_iter()
        .enumerate()
        .map(|(i, reason)| {
            if i == last && changed {
                format!("{reason}; running \"{shown}\"")
            } else {
                reason
            }
        })
        .collect();
    let mut argv = vec![prog.clone()];
    argv.extend(new_args);
    Rewritten { argv, notes }
}

/// `headway ctl <command>` is the form headway's design documents use: the admin
/// commands answer under it too. Drops `ctl` where the first command word stands.
fn drop_ctl(tokens: &mut Vec<String>) {
    const TAKES_VALUE: &[&str] = &[
        "-c",
        "--config",
        "-o",
        "--output",
        "-n",
        "--namespace",
        "-u",
        "--user",
        "-user",
    ];
    let mut i = 0;
    while i < tokens.len() {
        let t = tokens[i].as_str();
        if t == "ctl" {
            tokens.remove(i);
            return;
        }
        if !t.starts_with('-') {
            return;
        }
        i += if TAKES_VALUE.contains(&t) { 2 } else { 1 };
    }
}

/// The basename of argv[0]: `headway`, or `headscale` when installed under that name.
pub fn program_name(argv0: &str) -> String {
    std::path::Path::new(argv0)
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| !n.is_empty())
        .unwrap_or("headway")
        .to_owned()
}

/// What `-r` of `routes enable|disable` names: route ids (0.18–0.25) or prefixes (≤0.17).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RouteArgs {
    Ids(Vec<u64>),
    Prefixes(Vec<String>),
}

/// Splits comma lists and decides by parsing: all integers are route ids, anything
/// else is a prefix the server will validate. A mix of both is refused.
pub fn classify_routes(values: &[String]) -> Result<RouteArgs, String> {
    let values: Vec<&str> = values
        .iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .collect();
    let ids: Vec<u64> = values.iter().filter_map(|v| v.parse().ok()).collect();
    if ids.len() == values.len() && !ids.is_empty() {
        Ok(RouteArgs::Ids(ids))
    } else if ids.is_empty() {
        Ok(RouteArgs::Prefixes(
            values.into_iter().map(str::to_owned).collect(),
        ))
    } else {
        Err(format!(
            "-r mixes route ids and prefixes ({}): give either route ids (see \"routes list\") or prefixes like 192.168.1.0/24",
            values.join(",")
        ))
    }
}

/// One piece of the command line, as the scanner understood it.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Item {
    /// `-c/--config`, `-o/--output`, `--force`, `-h`: valid anywhere, left in place.
    Global(Vec<String>),
    /// A command word: the top command, then its subcommand.
    Word(String),
    Flag {
        name: String,
        value: Option<String>,
    },
    Pos(String),
    /// `--` and everything after it, untouched.
    Rest(Vec<String>),
}

/// `-i=6` → `-i 6`, `--user=bob` → `--user bob`, `-user=bob` → `-user bob`.
fn split_equals(args: &[String]) -> Vec<String> {
    let mut out = Vec::with_capacity(args.len());
    let mut rest = false;
    for arg in args {
        if rest || arg == "--" {
            rest = true;
            out.push(arg.clone());
            continue;
        }
        let bytes = arg.as_bytes();
        let split = if let Some(body) = arg.strip_prefix("--") {
            body.split_once('=')
                .filter(|(name, _)| !name.is_empty())
                .map(|(name, value)| (format!("--{name}"), value))
        } else if let Some(value) = arg.strip_prefix("-user=") {
            Some(("-user".to_owned(), value))
        } else if bytes.len() > 2 && bytes[0] == b'-' && bytes[2] == b'=' {
            bytes[1]
                .is_ascii_alphabetic()
                .then(|| (arg[..2].to_owned(), &arg[3..]))
        } else {
            None
        };
        match split {
            Some((name, value)) => {
                out.push(name);
                out.push(value.to_owned());
            }
            None => out.push(arg.clone()),
        }
    }
    out
}

fn canonical_top(word: &str) -> &'static str {
    match word {
        "users" | "user" | "namespaces" | "namespace" | "ns" => "users",
        "nodes" | "node" | "machines" | "machine" => "nodes",
        "routes" | "route" | "r" => "routes",
        "preauthkeys" | "preauthkey" | "authkey" | "pre" => "preauthkeys",
        "apikeys" | "apikey" | "api" => "apikeys",
        "generate" | "gen" => "generate",
        "policy" => "policy",
        "auth" => "auth",
        // Commands without subcommands, `help`, and unknown words.
        _ => "",
    }
}

fn canonical_sub(top: &str, word: &str) -> String {
    let sub = match (top, word) {
        (_, "ls" | "show") => "list",
        ("nodes", "logout" | "exp" | "e") => "expire",
        ("nodes", "tags" | "t") => "tag",
        ("nodes", "lsr" | "routes" | "route") => "list-routes",
        ("nodes", "mv") => "move",
        ("nodes", "del") => "delete",
        ("users", "mv") => "rename",
        ("users", "delete") => "destroy",
        ("preauthkeys", "revoke" | "exp" | "e") => "expire",
        _ => word,
    };
    sub.to_owned()
}

/// Global flags and whether they take a value.
fn global_flag(flag: &str) -> Option<bool> {
    match flag {
        "-c" | "--config" | "-o" | "--output" => Some(true),
        "--force" | "-h" | "--help" | "-V" | "--version" => Some(false),
        _ => None,
    }
}

/// Whether a non-global flag consumes the next token, in the context of its command.
fn takes_value(flag: &str, top: &str, sub: &str) -> bool {
    match flag {
        // `users create -d NAME` vs `nodes expire -d` (disable expiry).
        "-d" => !(top == "nodes" && sub == "expire"),
        // `nodes tag -t tag:x` and `preauthkeys create --tags` vs ≤0.27 `nodes list -t`.
        "-t" | "--tags" => !(top == "nodes" && sub == "list"),
        "-n" | "--namespace" | "--name" | "-u" | "--user" | "-user" | "-i" | "--identifier"
        | "--id" | "-k" | "--key" | "-e" | "--expiration" | "--expiry" | "--email" | "-r"
        | "--routes" | "--route" | "--new-name" | "-p" | "--prefix" | "--picture-url"
        | "--display-name" | "-f" | "--file" | "--auth-id" => true,
        _ => false,
    }
}

fn is_flag(token: &str) -> bool {
    token.len() > 1 && token.starts_with('-')
}

fn scan(tokens: &[String]) -> Vec<Item> {
    let mut items = Vec::new();
    let mut top: Option<&'static str> = None;
    let mut sub: Option<String> = None;
    let mut i = 0;
    while i < tokens.len() {
        let token = &tokens[i];
        let next = tokens.get(i + 1);
        if token == "--" {
            items.push(Item::Rest(tokens[i..].to_vec()));
            break;
        }
        if is_flag(token) {
            let (global, takes) = match global_flag(token) {
                Some(takes) => (true, takes),
                None => (
                    false,
                    takes_value(token, top.unwrap_or(""), sub.as_deref().unwrap_or("")),
                ),
            };
            let value = if takes { next.cloned() } else { None };
            if value.is_some() {
                i += 1;
            }
            items.push(if global {
                Item::Global(std::iter::once(token.clone()).chain(value).collect())
            } else {
                Item::Flag {
                    name: token.clone(),
                    value,
                }
            });
        } else if top.is_none() {
            top = Some(canonical_top(token));
            items.push(Item::Word(token.clone()));
        } else if sub.is_none() && !top.unwrap_or("").is_empty() {
            sub = Some(canonical_sub(top.unwrap_or(""), token));
            items.push(Item::Word(token.clone()));
        } else {
            items.push(Item::Pos(token.clone()));
        }
        i += 1;
    }
    items
}

fn word_indices(items: &[Item]) -> Vec<usize> {
    items
        .iter()
        .enumerate()
        .filter(|(_, item)| matches!(item, Item::Word(_)))
        .map(|(i, _)| i)
        .collect()
}

fn word_at(items: &[Item], index: usize) -> &str {
    match &items[index] {
        Item::Word(w) => w,
        _ => "",
    }
}

/// Canonical top command and subcommand, after aliases.
fn path(items: &[Item]) -> (&'static str, String) {
    let words = word_indices(items);
    let top = words
        .first()
        .map_or("", |&i| canonical_top(word_at(items, i)));
    let sub = words
        .get(1)
        .map(|&i| canonical_sub(top, word_at(items, i)))
        .unwrap_or_default();
    (top, sub)
}

fn flag_value<'a>(items: &'a [Item], names: &[&str]) -> Option<&'a str> {
    items.iter().find_map(|item| match item {
        Item::Flag {
            name,
            value: Some(v),
        } if names.contains(&name.as_str()) => Some(v.as_str()),
        _ => None,
    })
}

fn has_flag(items: &[Item], names: &[&str]) -> bool {
    items
        .iter()
        .any(|item| matches!(item, Item::Flag { name, .. } if names.contains(&name.as_str())))
}

/// Rewrites old spellings in place and returns why, one reason per spelling.
fn translate(items: &mut Vec<Item>, prog: &str) -> Vec<String> {
    let mut reasons = Vec::new();

    // ≤0.17 kept `routes` under `nodes` too: `nodes routes enable -i 6 -r …`.
    let words = word_indices(items);
    if let [top_i, sub_i, ..] = words[..]
        && canonical_top(word_at(items, top_i)) == "nodes"
        && matches!(word_at(items, sub_i), "routes" | "route")
        && let Some(verb_i) = items.iter().position(|item| {
            matches!(item, Item::Pos(p) if matches!(p.as_str(), "list" | "ls" | "show" | "enable" | "disable" | "delete"))
        })
    {
        if let Item::Pos(verb) = items[verb_i].clone() {
            items[verb_i] = Item::Word(verb);
        }
        items[sub_i] = Item::Word("routes".into());
        let old_top = word_at(items, top_i).to_owned();
        items.remove(top_i);
        reasons.push(format!(
            "\"{old_top} routes\" is where Headscale 0.17 and older kept \"routes\""
        ));
    }

    // namespaces → users, machines → nodes.
    if let Some(&top_i) = word_indices(items).first() {
        let typed = word_at(items, top_i).to_owned();
        let modern = match typed.as_str() {
            "namespaces" | "namespace" | "ns" => Some("users"),
            "machines" | "machine" => Some("nodes"),
            _ => None,
        };
        if let Some(modern) = modern {
            items[top_i] = Item::Word(modern.into());
            reasons.push(format!("\"{typed}\" is the old name of \"{modern}\""));
        }
    }

    let (top, sub) = path(items);

    // -n/--namespace (≤0.28) and -user (a single-dash typo in cheat sheets) mean --user,
    // except under `users`, where -n is today's --name.
    for item in items.iter_mut() {
        if let Item::Flag {
            name,
            value: Some(_),
        } = item
        {
            let reason = match name.as_str() {
                "-n" | "--namespace" if top != "users" => Some(format!(
                    "\"{name}\" (namespace) is \"--user\" since Headscale 0.19"
                )),
                "-user" => Some("\"-user\" is read as \"--user\"".to_owned()),
                _ => None,
            };
            if let Some(reason) = reason {
                *name = "--user".into();
                reasons.push(reason);
            }
        }
    }

    // ≤0.27 `nodes list -t` (show tags): tags are always shown now.
    if top == "nodes" && sub == "list" {
        let before = items.len();
        items.retain(|item| {
            !matches!(item, Item::Flag { name, value: None } if name == "-t" || name == "--tags")
        });
        if items.len() != before {
            reasons.push("\"nodes list -t\" is not needed any more: tags are always shown".into());
        }
    }

    // ≤0.23 positional forms: `users rename OLD NEW`, `users destroy NAME`.
    if top == "users" && (sub == "rename" || sub == "destroy") {
        let mut wants: Vec<&str> = Vec::new();
        if !has_flag(items, &["-n", "--name", "-i", "--identifier"]) {
            wants.push("--name");
        }
        if sub == "rename" && !has_flag(items, &["-r", "--new-name"]) {
            wants.push("--new-name");
        }
        let mut wants = wants.into_iter();
        let mut converted = false;
        for item in items.iter_mut() {
            if let Item::Pos(value) = item {
                let Some(flag) = wants.next() else { break };
                *item = Item::Flag {
                    name: flag.into(),
                    value: Some(std::mem::take(value)),
                };
                converted = true;
            }
        }
        if converted {
            let form = if sub == "rename" {
                "users rename OLD NEW"
            } else {
                "users destroy NAME"
            };
            reasons.push(format!("\"{form}\" is the Headscale 0.23 and older form"));
        }
    }

    // ≤0.27 `preauthkeys expire [-n USER] KEY`.
    if top == "preauthkeys"
        && sub == "expire"
        && items.iter().any(|item| matches!(item, Item::Pos(_)))
    {
        reasons.push(
            "\"preauthkeys expire KEY\" is the Headscale 0.27 and older form; the key is looked up to find its --id"
                .into(),
        );
    }

    if top == "routes" {
        reasons.push(routes_reason(items, &sub, prog));
    }

    reasons
}

/// The note for the removed `routes` tree, naming today's command.
fn routes_reason(items: &[Item], sub: &str, prog: &str) -> String {
    let node = flag_value(items, &["-i", "--identifier"]);
    let routes: Vec<String> = items
        .iter()
        .filter_map(|item| match item {
            Item::Flag {
                name,
                value: Some(v),
            } if matches!(name.as_str(), "-r" | "--route" | "--routes") => Some(v.clone()),
            _ => None,
        })
        .collect();
    let all = has_flag(items, &["-a", "--all"]);
    let approve = format!(
        "today: \"{prog} nodes approve-routes -i {} -r <prefixes>\"",
        node.unwrap_or("<node id>")
    );
    match sub {
        "list" => {
            let i = node.map(|n| format!(" -i {n}")).unwrap_or_default();
            format!(
                "\"routes list\" is from Headscale 0.25 and older; today: \"{prog} nodes list-routes{i}\""
            )
        }
        "enable" | "disable" => {
            let adds = sub == "enable";
            let (form, effect) = match classify_routes(&routes) {
                _ if all => (
                    "-i N -a\" is from Headscale 0.17 and older",
                    if adds {
                        "approves every route the node announces"
                    } else {
                        "removes all of the node's approved routes"
                    },
                ),
                Ok(RouteArgs::Ids(_)) => (
                    "-r ROUTE_ID\" is from Headscale 0.18-0.25",
                    if adds {
                        "approves the route with that id"
                    } else {
                        "removes the route with that id from the approved ones"
                    },
                ),
                _ => (
                    "-i N -r PREFIX\" is from Headscale 0.17 and older",
                    if adds {
                        "adds the prefixes to the node's approved routes"
                    } else {
                        "removes the prefixes from the node's approved routes"
                    },
                ),
            };
            format!("\"routes {sub} {form}; it {effect} ({approve})")
        }
        "delete" => format!(
            "\"routes delete\" is from Headscale 0.21-0.25; it removes the route ({approve} without it)"
        ),
        _ => format!(
            "\"routes\" was removed in Headscale 0.26; today: \"{prog} nodes list-routes\" and \"{prog} nodes approve-routes\""
        ),
    }
}

/// Lays the items out again, moving flags that stood before the last command word
/// to just after it, where clap expects them.
fn assemble(items: Vec<Item>) -> Vec<String> {
    let leaf = word_indices(&items).last().copied();
    let mut out = Vec::new();
    let mut moved = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        let before_leaf = leaf.is_some_and(|leaf| i < leaf);
        match item {
            Item::Flag { name, value } if before_leaf => {
                moved.push(name);
                moved.extend(value);
            }
            Item::Flag { name, value } => {
                out.push(name);
                out.extend(value);
            }
            Item::Global(tokens) | Item::Rest(tokens) => out.extend(tokens),
            Item::Word(word) => {
                out.push(word);
                if Some(i) == leaf {
                    out.append(&mut moved);
                }
            }
            Item::Pos(p) => out.push(p),
        }
    }
    out
}

/// The command as a user would retype it; arguments that need it are single-quoted.
fn command_line(prog: &str, args: &[String]) -> String {
    let mut parts = vec![prog.to_owned()];
    for arg in args {
        let plain = !arg.is_empty()
            && arg
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.,:/=@+%".contains(c));
        parts.push(if plain {
            arg.clone()
        } else {
            format!("'{}'", arg.replace('\'', r"'\''"))
        });
    }
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(line: &str) -> Vec<String> {
        line.split_whitespace().map(str::to_owned).collect()
    }

    /// (typed, expected argv, number of notes). Sources: journeys.md J2–J5, J10,
    /// headscale-surface.md §1.3, and today's spellings, which must stay as they are.
    const CASES: &[(&str, &str, usize)] = &[
        // `ctl`: the form headway's design documents use; not an old spelling.
        ("headway ctl users list", "headway users list", 0),
        (
            "headway ctl namespaces create default",
            "headway users create default",
            1,
        ),
        (
            "headway -c x.yaml ctl nodes list",
            "headway -c x.yaml nodes list",
            0,
        ),
        // J2: namespaces.
        (
            "headway namespaces create default",
            "headway users create default",
            1,
        ),
        ("headway namespaces list", "headway users list", 1),
        ("headway namespace list", "headway users list", 1),
        (
            "headway ns create default",
            "headway users create default",
            1,
        ),
        (
            "headway namespace rename default myspace",
            "headway users rename --name default --new-name myspace",
            2,
        ),
        (
            "headway namespace destroy default",
            "headway users destroy --name default",
            2,
        ),
        (
            "headway users create default",
            "headway users create default",
            0,
        ),
        // §1.3: users rename/destroy positional (≤0.23) and the modern forms.
        (
            "headway users rename old new",
            "headway users rename --name old --new-name new",
            1,
        ),
        (
            "headway users destroy bob",
            "headway users destroy --name bob",
            1,
        ),
        (
            "headway users delete bob",
            "headway users delete --name bob",
            1,
        ),
        (
            "headway users rename -n old -r new",
            "headway users rename -n old -r new",
            0,
        ),
        (
            "headway users destroy -i 3",
            "headway users destroy -i 3",
            0,
        ),
        ("headway users list -n bob", "headway users list -n bob", 0),
        ("headway users list", "headway users list", 0),
        // J3: interactive registration.
        (
            "headway -n NAMESPACE nodes register --key nodekey:abcd",
            "headway nodes register --user NAMESPACE --key nodekey:abcd",
            1,
        ),
        (
            "headscale -n default nodes register --key K",
            "headscale nodes register --user default --key K",
            1,
        ),
        (
            "headway nodes register --user default --key nodekey:abcd",
            "headway nodes register --user default --key nodekey:abcd",
            0,
        ),
        (
            "headway nodes register -n default -k mkey:abcd",
            "headway nodes register --user default -k mkey:abcd",
            1,
        ),
        (
            "headway machines register -n default --key K",
            "headway nodes register --user default --key K",
            2,
        ),
        ("headway machines list", "headway nodes list", 1),
        ("headway machine ls", "headway nodes ls", 1),
        ("headway nodes list", "headway nodes list", 0),
        // J4: pre-auth keys.
        (
            "headway preauthkeys create -e 24h -n default",
            "headway preauthkeys create -e 24h --user default",
            1,
        ),
        (
            "headway preauthkeys create -e 24h --user default",
            "headway preauthkeys create -e 24h --user default",
            0,
        ),
        (
            "headway preauthkeys create -e 24h --user 1",
            "headway preauthkeys create -e 24h --user 1",
            0,
        ),
        (
            "headway preauthkeys create --reusable --ephemeral -u 1 --tags tag:a,tag:b",
            "headway preauthkeys create --reusable --ephemeral -u 1 --tags tag:a,tag:b",
            0,
        ),
        ("headway preauthkeys list", "headway preauthkeys list", 0),
        (
            "headway -n default preauthkeys list",
            "headway preauthkeys list --user default",
            1,
        ),
        (
            "headway preauthkeys list -n default",
            "headway preauthkeys list --user default",
            1,
        ),
        (
            "headway preauthkeys -n default list",
            "headway preauthkeys list --user default",
            1,
        ),
        (
            "headway preauthkeys --namespace default list",
            "headway preauthkeys list --user default",
            1,
        ),
        (
            "headway preauthkeys create --namespace=default",
            "headway preauthkeys create --user default",
            1,
        ),
        (
            "headway preauthkeys list -n=default",
            "headway preauthkeys list --user default",
            1,
        ),
        (
            "headway preauthkeys expire -n default abc123",
            "headway preauthkeys expire --user default abc123",
            2,
        ),
        (
            "headway preauthkeys expire abc123",
            "headway preauthkeys expire abc123",
            1,
        ),
        (
            "headway preauthkeys expire --id 3",
            "headway preauthkeys expire --id 3",
            0,
        ),
        // J5: routes.
        ("headway routes list -i 6", "headway routes list -i 6", 1),
        ("headway routes list", "headway routes list", 1),
        (
            "headway routes enable -i 6 -r 192.168.100.0/24",
            "headway routes enable -i 6 -r 192.168.100.0/24",
            1,
        ),
        (
            "headway routes enable -r 1",
            "headway routes enable -r 1",
            1,
        ),
        (
            "headway routes enable -i 6 -a",
            "headway routes enable -i 6 -a",
            1,
        ),
        (
            "headway routes disable -r 1",
            "headway routes disable -r 1",
            1,
        ),
        (
            "headway routes disable -i 6 -r 10.0.0.0/8,192.168.0.0/24",
            "headway routes disable -i 6 -r 10.0.0.0/8,192.168.0.0/24",
            1,
        ),
        (
            "headway routes delete -r 3",
            "headway routes delete -r 3",
            1,
        ),
        ("headway route ls", "headway route ls", 1),
        (
            "headway nodes routes enable -i 6 -r 10.0.0.0/24",
            "headway routes enable -i 6 -r 10.0.0.0/24",
            2,
        ),
        (
            "headway nodes routes list -i 6",
            "headway routes list -i 6",
            2,
        ),
        ("headway nodes routes -i 6", "headway nodes routes -i 6", 0),
        (
            "headway nodes approve-routes -i 6 -r 192.168.100.0/24",
            "headway nodes approve-routes -i 6 -r 192.168.100.0/24",
            0,
        ),
        ("headway nodes list-routes", "headway nodes list-routes", 0),
        // J10: cheat sheets.
        ("headway node list", "headway node list", 0),
        ("headway node ls -t", "headway node ls", 1),
        ("headway nodes list --tags", "headway nodes list", 1),
        (
            "headway -user default node ls",
            "headway node ls --user default",
            1,
        ),
        (
            "headway node ls -user default",
            "headway node ls --user default",
            1,
        ),
        ("headway node delete -i 6", "headway node delete -i 6", 0),
        ("headway node delete -i=6", "headway node delete -i 6", 0),
        (
            "headway node tag -i=2 -t=tag:test",
            "headway node tag -i 2 -t tag:test",
            0,
        ),
        ("headway routes list -i=9", "headway routes list -i 9", 1),
        (
            "headway routes enable -i=9 -r=192.168.10.0/24",
            "headway routes enable -i 9 -r 192.168.10.0/24",
            1,
        ),
        // §1.3: removed commands and flags.
        (
            "headway nodes move -i 3 -u bob",
            "headway nodes move -i 3 -u bob",
            0,
        ),
        ("headway nodes list -t", "headway nodes list", 1),
        (
            "headway nodes list -n default",
            "headway nodes list --user default",
            1,
        ),
        // Globals stay where they are; modern commands stay as typed.
        (
            "headway -c /etc/headway/config.yaml -o json nodes list",
            "headway -c /etc/headway/config.yaml -o json nodes list",
            0,
        ),
        (
            "headway -c /etc/x.yaml -n default nodes register -k K",
            "headway -c /etc/x.yaml nodes register --user default -k K",
            1,
        ),
        (
            "headway nodes list -o=json",
            "headway nodes list -o json",
            0,
        ),
        (
            "headway nodes expire -i 1 -d",
            "headway nodes expire -i 1 -d",
            0,
        ),
        (
            "headway users create bob -d Bob -e bob@example.com",
            "headway users create bob -d Bob -e bob@example.com",
            0,
        ),
        (
            "headway auth register --auth-id X -u bob",
            "headway auth register --auth-id X -u bob",
            0,
        ),
        (
            "headway apikeys expire -p abc",
            "headway apikeys expire -p abc",
            0,
        ),
        (
            "headway policy set -f p.hujson",
            "headway policy set -f p.hujson",
            0,
        ),
        (
            "headway generate private-key",
            "headway generate private-key",
            0,
        ),
        ("headway gen private-key", "headway gen private-key", 0),
        ("headway configtest", "headway configtest", 0),
        ("headway serve", "headway serve", 0),
        ("headway version", "headway version", 0),
        ("headway health", "headway health", 0),
        (
            "headway nodes backfillips --force",
            "headway nodes backfillips --force",
            0,
        ),
        ("headway", "headway", 0),
    ];

    #[test]
    fn old_spellings_become_modern_ones() {
        for (typed, expected, notes) in CASES {
            let got = rewrite(&argv(typed));
            assert_eq!(got.argv, argv(expected), "argv of {typed:?}");
            assert_eq!(
                got.notes.len(),
                *notes,
                "notes of {typed:?}: {:?}",
                got.notes
            );
        }
    }

    #[test]
    fn rewritten_argv_parses_with_clap() {
        for (typed, _, _) in CASES {
            let got = rewrite(&argv(typed));
            if got.argv.len() == 1 {
                continue; // bare `headway` prints help
            }
            if let Err(e) = <crate::cli::Cli as clap::Parser>::try_parse_from(&got.argv) {
                panic!("{typed:?} → {:?} does not parse:\n{e}", got.argv);
            }
        }
    }

    #[test]
    fn note_names_the_modern_command() {
        let got = rewrite(&argv("headway namespaces create default"));
        assert_eq!(
            got.notes,
            vec![
                "\"namespaces\" is the old name of \"users\"; running \"headway users create default\""
            ]
        );
        // Only the last note carries the command line.
        let got = rewrite(&argv("headway namespace rename default myspace"));
        assert!(!got.notes[0].contains("running"));
        assert!(
            got.notes[1]
                .ends_with("running \"headway users rename --name default --new-name myspace\"")
        );
        // Unchanged argv: no "running" part.
        let got = rewrite(&argv("headway routes enable -r 1"));
        assert!(!got.notes[0].contains("running"), "{:?}", got.notes);
        assert!(got.notes[0].contains("nodes approve-routes"));
    }

    #[test]
    fn empty_values_are_quoted_in_notes() {
        let typed = vec![
            "headway".to_owned(),
            "-n".into(),
            "my team".into(),
            "preauthkeys".into(),
            "list".into(),
        ];
        let got = rewrite(&typed);
        let mut expected = argv("headway preauthkeys list --user");
        expected.push("my team".into());
        assert_eq!(got.argv, expected);
        assert!(got.notes[0].ends_with("running \"headway preauthkeys list --user 'my team'\""));
    }

    #[test]
    fn program_name_is_the_basename() {
        assert_eq!(program_name("/usr/local/bin/headscale"), "headscale");
        assert_eq!(program_name("headway"), "headway");
        assert_eq!(program_name(""), "headway");
    }

    #[test]
    fn route_arguments_are_told_apart_by_parsing() {
        let v = |s: &[&str]| s.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            classify_routes(&v(&["1", "2"])),
            Ok(RouteArgs::Ids(vec![1, 2]))
        );
        assert_eq!(
            classify_routes(&v(&["3,4"])),
            Ok(RouteArgs::Ids(vec![3, 4]))
        );
        assert_eq!(
            classify_routes(&v(&["10.0.0.0/8,192.168.0.0/24"])),
            Ok(RouteArgs::Prefixes(v(&["10.0.0.0/8", "192.168.0.0/24"])))
        );
        assert_eq!(classify_routes(&v(&[""])), Ok(RouteArgs::Prefixes(vec![])));
        assert!(classify_routes(&v(&["1", "10.0.0.0/8"])).is_err());
    }
}
