//! The command line a container runs, read for the apps it starts and the port flags it
//! passes them.
//!
//! The command is the image's `Entrypoint` followed by its `Cmd`, as docker runs it, or a
//! line given by hand (split with POSIX shell word rules). A shell in the line
//! (`sh -c "exec redis-server --port 7777"`) has its script split and read as well;
//! `;`, `&&`, `||`, `|` and `&` end one command and start the next. An app runs when a
//! word of a command is one of its executables (by basename, or by absolute path); the
//! words after it are its arguments, so wrappers in front (`docker-entrypoint.sh`,
//! `gosu redis`, `tini --`) do not hide it.
//!
//! Flags are read as the feed describes them: `--port 7777`, `--port=7777`, a short flag
//! with its value attached (`-P3307`), with `key` a `key=value` argument
//! (`-E http.port=9201`), and with `subcommand` only after that sub-command
//! (`busybox httpd -p 8080`). The last one given wins. Nothing is expanded: `$PORT` stays
//! a template.

use relay::bundle::{AppSpec, FlagSpec};

/// One app started by the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Invocation {
    /// The word that named the executable.
    pub executable: String,
    /// The words after it, up to the end of its command.
    pub args: Vec<String>,
}

/// A flag found in an invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FlagHit<'s> {
    pub spec: &'s FlagSpec,
    /// The flag's value: `7777`, `127.0.0.1:8080`.
    pub value: String,
    /// The words as written: `--port 7777`.
    pub written: String,
    /// Position of the flag in the arguments (later wins).
    pub position: usize,
}

/// Splits a command line written by hand; `Err` when a quote is not closed.
pub fn split(line: &str) -> Result<Vec<String>, String> {
    shlex::split(line).ok_or_else(|| format!("cannot split {line:?}: unbalanced quotes"))
}

/// The separate commands of a command line, with shell scripts (`sh -c SCRIPT`) split
/// into theirs. Problems (a script that cannot be split) go to `problems`.
pub(crate) fn commands(argv: &[String], problems: &mut Vec<String>) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    commands_into(argv, problems, &mut out, 0);
    out
}

fn commands_into(
    argv: &[String],
    problems: &mut Vec<String>,
    out: &mut Vec<Vec<String>>,
    depth: usize,
) {
    const SHELLS: [&str; 6] = ["sh", "bash", "dash", "ash", "zsh", "ksh"];
    let mut current: Vec<String> = Vec::new();
    let mut i = 0;
    while i < argv.len() {
        let word = &argv[i];
        if matches!(word.as_str(), ";" | "&&" | "||" | "|" | "&") {
            out.push(std::mem::take(&mut current));
            i += 1;
            continue;
        }
        if SHELLS.contains(&basename(word)) && depth < 4 {
            // `sh [-e...] -c SCRIPT [name args...]`
            let script_at = argv[i + 1..]
                .iter()
                .take_while(|w| w.starts_with('-'))
                .position(|w| {
                    w == "-c" || (w.starts_with('-') && !w.starts_with("--") && w.ends_with('c'))
                })
                .map(|p| i + 1 + p + 1);
            if let Some(script) = script_at.and_then(|at| argv.get(at)) {
                out.push(std::mem::take(&mut current));
                match split(script) {
                    Ok(words) => commands_into(&words, problems, out, depth + 1),
                    Err(e) => problems.push(format!("command line: shell script: {e}")),
                }
                // What follows the script are its positional parameters, not a command.
                break;
            }
        }
        match word.strip_suffix(';') {
            Some(head) if !head.is_empty() => {
                current.push(head.to_owned());
                out.push(std::mem::take(&mut current));
            }
            _ => current.push(word.clone()),
        }
        i += 1;
    }
    out.push(current);
    out.retain(|c| !c.is_empty());
}

/// Where the command line starts `app`, if it does.
pub(crate) fn invocation(commands: &[Vec<String>], app: &AppSpec) -> Option<Invocation> {
    for command in commands {
        for (i, word) in command.iter().enumerate() {
            let names_it = app.executables.iter().any(|exe| {
                let exe = exe.as_str();
                if exe.starts_with('/') {
                    glob::Pattern::new(exe).is_ok_and(|p| p.matches(word))
                } else {
                    basename(word) == exe
                }
            });
            if names_it {
                return Some(Invocation {
                    executable: word.clone(),
                    args: command[i + 1..].to_vec(),
                });
            }
        }
    }
    None
}

/// The first argument that is not a flag: the sub-command or applet (`httpd`).
pub(crate) fn subcommand(invocation: &Invocation) -> Option<&str> {
    invocation
        .args
        .first()
        .map(String::as_str)
        .filter(|w| !w.starts_with('-'))
}

/// Every port flag of `flags` in the invocation, in argument order.
pub(crate) fn flags<'s>(invocation: &Invocation, flags: &'s [FlagSpec]) -> Vec<FlagHit<'s>> {
    let mut hits = Vec::new();
    let sub = subcommand(invocation);
    for spec in flags {
        let (start, applies) = match &spec.subcommand {
            Some(wanted) => (1, sub == Some(wanted.as_str())),
            None => (0, true),
        };
        if !applies {
            continue;
        }
        let args = &invocation.args;
        let flag = spec.flag.as_str();
        let short = !flag.starts_with("--") && flag.len() == 2;
        let mut i = start;
        while i < args.len() {
            let word = &args[i];
            let (value, written, used) = if word == flag {
                match args.get(i + 1) {
                    Some(next) => (next.clone(), format!("{word} {next}"), 2),
                    None => (String::new(), word.clone(), 1),
                }
            } else if let Some(v) = word.strip_prefix(flag).and_then(|r| r.strip_prefix('=')) {
                (v.to_owned(), word.clone(), 1)
            } else if short && word.len() > 2 && word.starts_with(flag) {
                (word[2..].to_owned(), word.clone(), 1)
            } else {
                i += 1;
                continue;
            };
            let value = match &spec.key {
                // `-E http.port=9201`: only this key's assignments.
                Some(key) => match value.split_once('=') {
                    Some((k, v)) if k == key.as_str() => Some(v.to_owned()),
                    _ => None,
                },
                None => Some(value),
            };
            if let Some(value) = value.filter(|v| !v.is_empty()) {
                hits.push(FlagHit {
                    spec,
                    value,
                    written,
                    position: i,
                });
            }
            i += used;
        }
    }
    hits.sort_by_key(|h| h.position);
    hits
}

/// Absolute paths among the arguments (`/etc/redis.conf`, `--config=/etc/mongod.conf`):
/// config files the command line may name.
pub(crate) fn paths(invocation: &Invocation) -> Vec<String> {
    invocation
        .args
        .iter()
        .filter_map(|w| {
            let path = match w.split_once('=') {
                Some((flag, path)) if flag.starts_with('-') => path,
                _ => w.as_str(),
            };
            path.starts_with('/').then(|| path.to_owned())
        })
        .collect()
}

fn basename(word: &str) -> &str {
    word.rsplit('/').next().unwrap_or(word)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(line: &str) -> Vec<String> {
        split(line).unwrap()
    }

    fn redis() -> AppSpec {
        serde_json::from_str(
            r#"{"id":"redis","name":"Redis","executables":["redis-server"],"configs":[],
               "flags":[{"flag":"--port"},{"flag":"--tls-port","label":"tls"}]}"#,
        )
        .unwrap()
    }

    fn check(line: &str, expected: &[&str]) {
        let app = redis();
        let commands = commands(&words(line), &mut Vec::new());
        let got: Vec<String> = invocation(&commands, &app)
            .map(|inv| flags(&inv, &app.flags))
            .unwrap_or_default()
            .iter()
            .map(|h| format!("{} => {}", h.written, h.value))
            .collect();
        assert_eq!(got, expected, "{line}");
    }

    #[test]
    fn redis_command_lines() {
        check(
            "redis-server /etc/redis.conf --port 7777",
            &["--port 7777 => 7777"],
        );
        check("redis-server --port 7777", &["--port 7777 => 7777"]);
        check(
            "/usr/local/bin/redis-server --port=1 --tls-port 2 --port 3",
            &["--port=1 => 1", "--tls-port 2 => 2", "--port 3 => 3"],
        );
        check(
            "docker-entrypoint.sh redis-server --port 7777",
            &["--port 7777 => 7777"],
        );
        check(
            "sh -c 'chown redis /data && exec gosu redis redis-server --port \"$PORT\"'",
            &["--port $PORT => $PORT"],
        );
        check("redis-cli -p 6380; echo --port 9", &[]);
        check("redis-server", &[]);
    }

    #[test]
    fn keys_short_flags_and_subcommands() {
        let es: AppSpec = serde_json::from_str(
            r#"{"id":"es","name":"ES","executables":["elasticsearch"],"configs":[],
               "flags":[{"flag":"-E","key":"http.port"},{"flag":"-P"},
                        {"flag":"-p","subcommand":"httpd","default":80}]}"#,
        )
        .unwrap();
        let inv = |line: &str| Invocation {
            executable: "x".into(),
            args: words(line),
        };
        let got = |line: &str| -> Vec<String> {
            flags(&inv(line), &es.flags)
                .iter()
                .map(|h| h.value.clone())
                .collect()
        };
        assert_eq!(got("-E cluster.name=x -E http.port=9201"), ["9201"]);
        assert_eq!(got("-Ehttp.port=9202 -P3307"), ["9202", "3307"]);
        assert_eq!(got("httpd -f -p 127.0.0.1:8080"), ["127.0.0.1:8080"]);
        assert_eq!(got("telnetd -p 23"), Vec::<String>::new());
        assert_eq!(subcommand(&inv("httpd -f")), Some("httpd"));
        assert_eq!(
            paths(&inv("--config=/etc/mongod.conf /etc/x.conf --port 1")),
            ["/etc/mongod.conf", "/etc/x.conf"]
        );
    }

    #[test]
    fn unbalanced_quotes_are_an_error() {
        assert!(split("redis-server --port '7777").is_err());
        let mut problems = Vec::new();
        let commands = commands(&words("sh -c \"redis-server '\""), &mut problems);
        assert!(commands.is_empty());
        assert_eq!(problems.len(), 1, "{problems:?}");
    }
}
