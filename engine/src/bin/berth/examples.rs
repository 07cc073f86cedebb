//! The "Examples:" section of every command's `--help` (and of its man
//! page): a table of examples by command, added to clap's definitions as
//! `after_help`. In an example `%` stands for the command as it is typed
//! ("berth ps", "berth container ls"), so a command under two names (`berth
//! start`, `berth container start`) shares its examples.

use clap::Command;

/// Examples by command path; the commands of the container and image groups
/// fall back to their top-level name's ("container start" → "start").
const EXAMPLES: &[(&str, &[&str])] = &[
    ("", &[
        "berth run --rm -it busybox sh          # a throwaway shell",
        "berth ps -a                            # every container",
        "berth -H tcp://10.0.0.5:2376 --tlsverify info",
        "berth --context remote ps              # the daemon of a context",
    ]),
    ("start", &["% web", "% -ai shell        # attach to it, with its stdin"]),
    ("stop", &["% web", "% -t 30 web db      # up to 30 s before SIGKILL"]),
    ("restart", &["% web", "% -t 0 web         # kill at once, start again"]),
    ("kill", &["% web", "% -s HUP web        # send SIGHUP"]),
    ("rm", &["% web", "% -f -v web         # stop it first, remove its anonymous volumes"]),
    ("pause", &["% web"]),
    ("unpause", &["% web"]),
    ("rename", &["% web frontend"]),
    ("update", &["% --memory 256m --cpus 0.5 web", "% --restart unless-stopped web"]),
    ("wait", &["% job                # prints its exit code"]),
    ("top", &["% web", "% web -o pid,comm"]),
    ("diff", &["% web"]),
    ("export", &["% web > web.tar", "% -o web.tar web"]),
    ("logs", &["% web", "% -f --tail 10 -t web"]),
    ("inspect", &["% web", "% --format '{{.State.Status}}' web"]),
    ("run", &[
        "% --rm busybox echo hello",
        "% -d --name web -p 8080:80 nginx",
        "% -it -v data:/data busybox sh",
    ]),
    ("create", &["% --name web -p 8080:80 nginx", "% -it busybox sh"]),
    ("attach", &["% web", "% --no-stdin web"]),
    ("images", &["%", "% -a --filter dangling=true", "% --format '{{.Repository}}:{{.Tag}}'"]),
    ("pull", &["% busybox", "% -a registry.example.com:5000/app"]),
    ("push", &["% registry.example.com:5000/app:1.0"]),
    ("tag", &["% busybox registry.example.com:5000/busybox:1"]),
    ("rmi", &["% busybox", "% -f 0123456789ab"]),
    ("save", &["% busybox > busybox.tar", "% -o images.tar busybox alpine"]),
    ("load", &["% < busybox.tar", "% -i busybox.tar"]),
    ("import", &["% rootfs.tar app:1", "cat rootfs.tar | % - app:1"]),
    ("version", &["%", "% --format '{{.Server.Version}}'"]),
    ("info", &["%", "% --format '{{.Containers}}'"]),
    ("events", &["%", "% --since 10m --filter type=container"]),
    ("login", &["% registry.example.com", "echo \"$TOKEN\" | % -u me --password-stdin registry.example.com"]),
    ("logout", &["% registry.example.com"]),
    ("system", &["berth system df", "berth system prune -a"]),
    ("system df", &["%", "% -v"]),
    ("system prune", &["%", "% -a --volumes -f"]),
    ("ps", &["%", "% -a -q", "% --filter status=exited --format '{{.Names}}'"]),
    ("exec", &["% web ls /", "% -it web sh", "% -e A=1 -w /tmp web env"]),
    ("stats", &["%", "% --no-stream web"]),
    ("cp", &["% web:/etc/hosts .", "% ./config.json web:/etc/app/"]),
    ("container", &["berth container ls -a", "berth container prune"]),
    ("container prune", &["%", "% -f --filter until=24h"]),
    ("container ls", &["%", "% -a -q", "% --filter status=exited --format '{{.Names}}'"]),
    ("image inspect", &["% busybox", "% --format '{{.Config.Cmd}}' busybox"]),
    ("image", &["berth image ls", "berth image prune -a"]),
    ("image ls", &["%", "% -a --filter dangling=true"]),
    ("image prune", &["%", "% -a -f"]),
    ("network", &["berth network create backend", "berth network ls"]),
    ("network create", &["% backend", "% --subnet 10.20.0.0/24 --gateway 10.20.0.1 backend"]),
    ("network ls", &["%", "% -q --filter driver=bridge"]),
    ("network inspect", &["% backend", "% --format '{{.IPAM.Config}}' backend"]),
    ("network rm", &["% backend"]),
    ("network prune", &["%", "% -f"]),
    ("network connect", &["% backend web", "% --alias api backend web"]),
    ("network disconnect", &["% backend web"]),
    ("port", &["% web", "% web 80/tcp"]),
    ("volume", &["berth volume create data", "berth volume ls"]),
    ("volume create", &["% data", "% --label owner=me data"]),
    ("volume ls", &["%", "% -q --filter dangling=true"]),
    ("volume inspect", &["% data", "% --format '{{.Mountpoint}}' data"]),
    ("volume rm", &["% data"]),
    ("volume prune", &["%", "% -a -f"]),
    ("build", &["% -t app:1 .", "% -f docker/Dockerfile --build-arg V=2 -t app:2 .", "% --progress plain -t app:1 ."]),
    ("commit", &["% web web-snapshot:1", "% -m 'added config' -c 'CMD [\"sh\"]' web app:2"]),
    ("history", &["% busybox", "% --no-trunc -q app:1"]),
    ("builder", &["berth builder prune"]),
    ("builder prune", &["%", "% -a -f"]),
    ("context", &[
        "berth context create remote --docker host=tcp://10.0.0.5:2376,ca=ca.pem,cert=cert.pem,key=key.pem",
        "berth context use remote",
    ]),
    ("context create", &[
        "% remote --docker host=tcp://10.0.0.5:2376,ca=ca.pem,cert=cert.pem,key=key.pem",
        "% local --description 'this machine' --docker host=unix:///run/berth/berth.sock",
        "% copy --from remote",
    ]),
    ("context ls", &["%", "% --format json"]),
    ("context use", &["% remote", "% default"]),
    ("context inspect", &["%", "% remote --format '{{.Endpoints.docker.Host}}'"]),
    ("context rm", &["% remote", "% -f remote      # even the one in use"]),
    ("context show", &["%"]),
    ("context update", &["% remote --description 'the build box'", "% remote --docker host=tcp://10.0.0.6:2376"]),
    ("completion", &[
        "% bash > /etc/bash_completion.d/berth",
        "% zsh > \"${fpath[1]}/_berth\"",
        "% fish > ~/.config/fish/completions/berth.fish",
    ]),
    ("manpages", &["% /usr/local/share/man/man1"]),
];

/// The examples of the command at `path` ("" for berth itself).
pub fn examples_for(path: &str) -> Option<&'static [&'static str]> {
    let find = |p: &str| EXAMPLES.iter().find(|(k, _)| *k == p).map(|(_, e)| *e);
    find(path).or_else(|| {
        let (group, leaf) = path.split_once(' ')?;
        match (group, leaf) {
            ("container", "ls") => find("ps"),
            ("image", "ls") => find("images"),
            ("container" | "image" | "system", leaf) => find(leaf),
            _ => None,
        }
    })
}

/// `cmd` and every command under it with their "Examples:" section.
pub fn add(cmd: Command) -> Command {
    add_under(cmd, "")
}

fn add_under(mut cmd: Command, path: &str) -> Command {
    let typed = if path.is_empty() {
        "berth".to_string()
    } else {
        format!("berth {path}")
    };
    if let Some(examples) = examples_for(path) {
        let lines: Vec<String> = examples
            .iter()
            .map(|e| format!("  {}", e.replace('%', &typed)))
            .collect();
        cmd = cmd.after_help(format!("Examples:\n{}", lines.join("\n")));
    }
    let names: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_string())
        .collect();
    for name in names {
        let sub_path = if path.is_empty() {
            name.clone()
        } else {
            format!("{path} {name}")
        };
        cmd = cmd.mut_subcommand(&name, |sub| add_under(sub, &sub_path));
    }
    cmd
}
