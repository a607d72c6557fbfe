//! kubelet's command line as kubeadm and distributions use it: every kubelet v1.34 flag that
//! `staticlet run` does not implement is still accepted, with a value of the right shape, and
//! reported in one warning line at start (`IgnoredKubeletFlags`); flag names are normalised as
//! kubelet's pflag set does (`_` → `-`); and `--kubeadm-flags-env FILE` reads kubeadm's
//! `kubeadm-flags.env` (`KUBELET_KUBEADM_ARGS="..."`) for running without systemd.
//!
//! The flags `staticlet run` honours (or keeps for a later change) are ordinary fields of
//! `options::RunArgs`.

use std::ffi::{OsStr, OsString};
use std::path::Path;

use anyhow::{bail, Context, Result};
use clap::{Arg, ArgAction, ArgMatches, Args, Command, FromArgMatches};
use staticlet_manifest::duration::parse_go_duration;

/// The shape of a kubelet flag's value, as its pflag type parses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `--flag` or `--flag=true|false` (Go's `strconv.ParseBool`); never a separate word.
    Bool,
    /// Any string.
    Str,
    /// A comma-separated list (`StringSlice`); repeatable.
    Strings,
    /// A Go duration (`time.ParseDuration`, negative allowed).
    Duration,
    Int32,
    Int64,
    /// klog's verbosity (`-v`): an unsigned 31-bit integer.
    Level,
    /// `key=value[,key=value...]`.
    Map,
    /// `key<value[,key<value...]` (eviction thresholds).
    LangleMap,
    /// `key=bool[,key=bool...]` (`--feature-gates`).
    BoolMap,
    /// `pattern=N[,pattern=N...]` (`--vmodule`).
    VModule,
    /// A resource quantity (`512`, `1Ki`, `2M`).
    Quantity,
}

/// Every kubelet v1.34 flag with no meaning for `staticlet run` (from kubelet's
/// `cmd/kubelet/app/options`, `pkg/kubelet/config/flags.go`, component-base's logging flags and
/// the cAdvisor flags kubelet registers globally), with the shape of its value.
const IGNORED: &[(&str, Kind)] = &[
    // KubeletFlags.
    ("config-dir", Kind::Str),
    ("cloud-provider", Kind::Str),
    ("seccomp-default", Kind::Bool),
    ("lock-file", Kind::Str),
    ("exit-on-lock-contention", Kind::Bool),
    ("minimum-container-ttl-duration", Kind::Duration),
    ("maximum-dead-containers-per-container", Kind::Int32),
    ("maximum-dead-containers", Kind::Int32),
    ("experimental-mounter-path", Kind::Str),
    ("experimental-allocatable-ignore-eviction", Kind::Bool),
    // Container runtime options.
    ("runtime-cgroups", Kind::Str),
    ("image-credential-provider-config", Kind::Str),
    ("image-credential-provider-bin-dir", Kind::Str),
    // KubeletConfiguration flags.
    ("enable-server", Kind::Bool),
    ("fail-swap-on", Kind::Bool),
    ("read-only-port", Kind::Int32),
    ("fail-cgroupv1", Kind::Bool),
    ("image-service-endpoint", Kind::Str),
    ("rotate-server-certificates", Kind::Bool),
    ("tls-cipher-suites", Kind::Strings),
    ("tls-min-version", Kind::Str),
    ("registry-qps", Kind::Int32),
    ("registry-burst", Kind::Int32),
    ("event-qps", Kind::Int32),
    ("event-burst", Kind::Int32),
    ("enable-debugging-handlers", Kind::Bool),
    ("contention-profiling", Kind::Bool),
    ("oom-score-adj", Kind::Int32),
    ("volume-plugin-dir", Kind::Str),
    ("streaming-connection-idle-timeout", Kind::Duration),
    ("node-status-update-frequency", Kind::Duration),
    ("minimum-image-ttl-duration", Kind::Duration),
    ("image-gc-high-threshold", Kind::Int32),
    ("image-gc-low-threshold", Kind::Int32),
    ("volume-stats-agg-period", Kind::Duration),
    ("feature-gates", Kind::BoolMap),
    ("kubelet-cgroups", Kind::Str),
    ("system-cgroups", Kind::Str),
    ("provider-id", Kind::Str),
    ("cgroups-per-qos", Kind::Bool),
    ("cgroup-root", Kind::Str),
    ("cpu-manager-policy", Kind::Str),
    ("cpu-manager-policy-options", Kind::Map),
    ("cpu-manager-reconcile-period", Kind::Duration),
    ("qos-reserved", Kind::Map),
    ("topology-manager-policy", Kind::Str),
    ("runtime-request-timeout", Kind::Duration),
    ("hairpin-mode", Kind::Str),
    ("max-pods", Kind::Int32),
    ("pod-max-pids", Kind::Int64),
    ("resolv-conf", Kind::Str),
    ("runonce", Kind::Bool),
    ("cpu-cfs-quota", Kind::Bool),
    ("cpu-cfs-quota-period", Kind::Duration),
    ("enable-controller-attach-detach", Kind::Bool),
    ("make-iptables-util-chains", Kind::Bool),
    ("container-log-max-size", Kind::Str),
    ("container-log-max-files", Kind::Int32),
    ("allowed-unsafe-sysctls", Kind::Strings),
    ("node-status-max-images", Kind::Int32),
    ("kernel-memcg-notification", Kind::Bool),
    ("local-storage-capacity-isolation", Kind::Bool),
    ("max-open-files", Kind::Int64),
    ("kube-api-content-type", Kind::Str),
    ("kube-api-qps", Kind::Int32),
    ("kube-api-burst", Kind::Int32),
    ("serialize-image-pulls", Kind::Bool),
    ("eviction-hard", Kind::LangleMap),
    ("eviction-soft", Kind::LangleMap),
    ("eviction-soft-grace-period", Kind::Map),
    ("eviction-pressure-transition-period", Kind::Duration),
    ("eviction-max-pod-grace-period", Kind::Int32),
    ("eviction-minimum-reclaim", Kind::Map),
    ("pods-per-core", Kind::Int32),
    ("protect-kernel-defaults", Kind::Bool),
    ("reserved-cpus", Kind::Str),
    ("topology-manager-scope", Kind::Str),
    ("topology-manager-policy-options", Kind::Map),
    ("system-reserved", Kind::Map),
    ("kube-reserved", Kind::Map),
    ("enforce-node-allocatable", Kind::Strings),
    ("system-reserved-cgroup", Kind::Str),
    ("kube-reserved-cgroup", Kind::Str),
    ("memory-manager-policy", Kind::Str),
    ("reserved-memory", Kind::Strings),
    // Logging (component-base).
    ("log-flush-frequency", Kind::Duration),
    ("v", Kind::Level),
    ("vmodule", Kind::VModule),
    ("log-text-split-stream", Kind::Bool),
    ("log-text-info-buffer-size", Kind::Quantity),
    ("log-json-split-stream", Kind::Bool),
    ("log-json-info-buffer-size", Kind::Quantity),
    // cAdvisor's, registered by kubelet (most of them deprecated).
    ("housekeeping-interval", Kind::Duration),
    ("application-metrics-count-limit", Kind::Int64),
    ("boot-id-file", Kind::Str),
    ("container-hints", Kind::Str),
    ("containerd", Kind::Str),
    ("containerd-namespace", Kind::Str),
    ("enable-load-reader", Kind::Bool),
    ("event-storage-age-limit", Kind::Str),
    ("event-storage-event-limit", Kind::Str),
    ("global-housekeeping-interval", Kind::Duration),
    ("log-cadvisor-usage", Kind::Bool),
    ("machine-id-file", Kind::Str),
    ("storage-driver-user", Kind::Str),
    ("storage-driver-password", Kind::Str),
    ("storage-driver-host", Kind::Str),
    ("storage-driver-db", Kind::Str),
    ("storage-driver-table", Kind::Str),
    ("storage-driver-secure", Kind::Bool),
    ("storage-driver-buffer-duration", Kind::Duration),
];

/// The kubelet flags `staticlet run` accepts without using them. `given` lists those on the
/// command line (as `--name`, in the table's order).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IgnoredKubeletFlags {
    pub given: Vec<String>,
}

impl FromArgMatches for IgnoredKubeletFlags {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let mut me = Self::default();
        me.update_from_arg_matches(matches)?;
        Ok(me)
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        for (name, _) in IGNORED {
            let flag = format!("--{name}");
            if matches.contains_id(name) && !self.given.contains(&flag) {
                self.given.push(flag);
            }
        }
        Ok(())
    }
}

impl Args for IgnoredKubeletFlags {
    fn augment_args(cmd: Command) -> Command {
        IGNORED
            .iter()
            .fold(cmd, |cmd, &(name, kind)| cmd.arg(ignored_arg(name, kind)))
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
}

/// One ignored flag, shaped as pflag parses it: booleans take no separate word (`--flag`,
/// `--flag=false`); the others take one (`--flag=v` or `--flag v`, even when it starts with
/// `-`, as pflag does), and the list and map kinds may be repeated.
fn ignored_arg(name: &'static str, kind: Kind) -> Arg {
    let arg = Arg::new(name).long(name).hide(true);
    let arg = if name == "v" { arg.short('v') } else { arg };
    let check: fn(&str) -> Result<String, String> = match kind {
        Kind::Bool => {
            return arg
                .num_args(0..=1)
                .require_equals(true)
                .default_missing_value("true")
                .action(ArgAction::Set)
                .value_name("BOOL")
                .value_parser(|s: &str| go_bool(s).map(|_| s.to_string()));
        }
        Kind::Str | Kind::Strings => |s| Ok(s.to_string()),
        Kind::Duration => |s| go_duration_shape(s).map(|()| s.to_string()),
        Kind::Int32 => |s| go_int(s, 32).map(|_| s.to_string()),
        Kind::Int64 => |s| go_int(s, 64).map(|_| s.to_string()),
        Kind::Level => |s| verbosity(s).map(|_| s.to_string()),
        Kind::Map => |s| pairs(s, '=', |_| Ok(())).map(|()| s.to_string()),
        Kind::LangleMap => |s| pairs(s, '<', |_| Ok(())).map(|()| s.to_string()),
        Kind::BoolMap => |s| pairs(s, '=', |v| go_bool(v).map(|_| ())).map(|()| s.to_string()),
        Kind::VModule => |s| pairs(s, '=', |v| verbosity(v).map(|_| ())).map(|()| s.to_string()),
        Kind::Quantity => |s| quantity(s).map(|()| s.to_string()),
    };
    let repeatable = matches!(
        kind,
        Kind::Strings | Kind::Map | Kind::LangleMap | Kind::BoolMap | Kind::VModule
    );
    arg.num_args(1)
        .allow_hyphen_values(true)
        .action(if repeatable {
            ArgAction::Append
        } else {
            ArgAction::Set
        })
        .value_name(match kind {
            Kind::Duration => "DURATION",
            Kind::Int32 | Kind::Int64 | Kind::Level => "INT",
            Kind::Quantity => "QUANTITY",
            _ => "VALUE",
        })
        .value_parser(check)
}

/// Go's `strconv.ParseBool`, which pflag's boolean flags use.
pub fn go_bool(s: &str) -> Result<bool, String> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err(format!("{s:?} is not a boolean (true or false)")),
    }
}

/// A Go duration, negative allowed (kubelet's flag parsing accepts one; its validation, which
/// staticlet does not run for flags it ignores, may not).
fn go_duration_shape(s: &str) -> Result<(), String> {
    let t = s.trim();
    let t = t.strip_prefix('-').unwrap_or(t);
    parse_go_duration(t)
        .map(|_| ())
        .map_err(|_| format!("invalid duration {s:?} (expected e.g. 20s, 1m30s, 500ms)"))
}

/// Go's `strconv.ParseInt(s, 0, bits)`: an optional sign, then decimal, `0x` hex, `0o` or
/// leading-`0` octal, or `0b` binary digits (with `_` between digits after a prefix).
fn go_int(s: &str, bits: u32) -> Result<i64, String> {
    let bad = || format!("{s:?} is not a {bits}-bit integer");
    let (neg, rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let lower = rest.to_ascii_lowercase();
    let (radix, digits) = if let Some(d) = lower.strip_prefix("0x") {
        (16, d.to_string())
    } else if let Some(d) = lower.strip_prefix("0b") {
        (2, d.to_string())
    } else if let Some(d) = lower.strip_prefix("0o") {
        (8, d.to_string())
    } else if lower.len() > 1 && lower.starts_with('0') {
        (8, lower[1..].to_string())
    } else {
        if lower.contains('_') {
            return Err(bad());
        }
        (10, lower)
    };
    if digits.is_empty()
        || digits.starts_with('_')
        || digits.ends_with('_')
        || digits.contains("__")
    {
        return Err(bad());
    }
    let magnitude = i128::from_str_radix(&digits.replace('_', ""), radix).map_err(|_| bad())?;
    let v = if neg { -magnitude } else { magnitude };
    let (min, max) = (-(1i128 << (bits - 1)), (1i128 << (bits - 1)) - 1);
    if v < min || v > max {
        return Err(format!("{s:?} is out of range for a {bits}-bit integer"));
    }
    Ok(v as i64)
}

/// klog's verbosity level: `strconv.ParseUint(s, 10, 31)`.
fn verbosity(s: &str) -> Result<u32, String> {
    s.parse::<u32>()
        .ok()
        .filter(|v| *v < 1 << 31)
        .ok_or_else(|| format!("{s:?} is not a verbosity level (0, 1, 2, ...)"))
}

/// `key<sep>value` pairs separated by commas (pflag's map flags), each value checked.
fn pairs(s: &str, sep: char, value: fn(&str) -> Result<(), String>) -> Result<(), String> {
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (k, v) = item
            .split_once(sep)
            .ok_or_else(|| format!("{item:?} is not key{sep}value"))?;
        if k.trim().is_empty() {
            return Err(format!("{item:?}: empty key"));
        }
        value(v.trim()).map_err(|e| format!("{item:?}: {e}"))?;
    }
    Ok(())
}

/// A Kubernetes resource quantity: a decimal number with an optional SI or binary suffix or
/// exponent (`512`, `1.5`, `100m`, `1Ki`, `2M`, `1e3`).
pub fn quantity(s: &str) -> Result<(), String> {
    let bad = || format!("{s:?} is not a quantity (e.g. 512, 100m, 1Ki, 2M)");
    let t = s.strip_prefix(['+', '-']).unwrap_or(s);
    let num_len = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, suffix) = t.split_at(num_len);
    if !num.chars().any(|c| c.is_ascii_digit()) || num.matches('.').count() > 1 {
        return Err(bad());
    }
    let ok = match suffix {
        "" | "n" | "u" | "m" | "k" | "M" | "G" | "T" | "P" | "E" => true,
        "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei" => true,
        e => e
            .strip_prefix(['e', 'E'])
            .map(|x| x.strip_prefix(['+', '-']).unwrap_or(x))
            .is_some_and(|x| !x.is_empty() && x.chars().all(|c| c.is_ascii_digit())),
    };
    if ok {
        Ok(())
    } else {
        Err(bad())
    }
}

/// `--register-with-taints`: the taints, as (key, value, effect).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taints(pub Vec<(String, String, String)>);

/// Parses `--register-with-taints`: `key[=value]:effect` items separated by commas (kubelet's
/// syntax).
pub fn parse_taints(s: &str) -> Result<Taints, String> {
    let mut out = Vec::new();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (kv, effect) = item
            .rsplit_once(':')
            .ok_or_else(|| format!("{item:?} is not key[=value]:effect"))?;
        if !matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute") {
            return Err(format!(
                "{item:?}: effect {effect:?} is not NoSchedule, PreferNoSchedule or NoExecute"
            ));
        }
        let (key, value) = kv.split_once('=').unwrap_or((kv, ""));
        if key.is_empty() {
            return Err(format!("{item:?}: empty key"));
        }
        out.push((key.to_string(), value.to_string(), effect.to_string()));
    }
    Ok(Taints(out))
}

/// The flag that names a kubeadm-flags.env file to read.
const FLAGS_ENV: &str = "--kubeadm-flags-env";

/// The variables of a kubeadm-flags.env (or `/etc/default/kubelet`) file that hold kubelet
/// flags, in the order kubeadm's systemd drop-in expands them.
const ARGS_VARIABLES: [&str; 2] = ["KUBELET_KUBEADM_ARGS", "KUBELET_EXTRA_ARGS"];

/// The command line as `staticlet run` parses it: flag names normalised as kubelet does
/// (`--fail_swap_on` is `--fail-swap-on`), and with `--kubeadm-flags-env FILE` the flags of
/// that file inserted before the command line's own, so that those given on the command line
/// win (a flag given twice takes its last value, as in kubelet). Other commands are returned
/// unchanged.
pub fn run_argv(argv: Vec<OsString>) -> Result<Vec<OsString>> {
    if argv.get(1).map(OsString::as_os_str) != Some(OsStr::new("run")) {
        return Ok(argv);
    }
    let mut out: Vec<OsString> = argv[..2].to_vec();
    let rest = normalize(&argv[2..]);
    let mut env_file = None;
    for (i, arg) in rest.iter().enumerate() {
        let arg = arg.to_string_lossy();
        if arg == "--" {
            break;
        }
        if let Some(v) = arg.strip_prefix(FLAGS_ENV) {
            if let Some(v) = v.strip_prefix('=') {
                env_file = Some(OsString::from(v));
            } else if v.is_empty() {
                env_file = rest.get(i + 1).cloned();
            }
        }
    }
    if let Some(file) = env_file {
        let path = Path::new(&file);
        let text = match std::fs::read_to_string(path) {
            // kubeadm's file before `kubeadm init` wrote it: none yet, as systemd's optional
            // `EnvironmentFile=-` (the agent then waits for kubeadm's config, `kubeadm.rs`).
            Err(e)
                if e.kind() == std::io::ErrorKind::NotFound
                    && path == Path::new(crate::kubeadm::FLAGS_ENV_FILE) =>
            {
                String::new()
            }
            r => r.with_context(|| format!("reading {FLAGS_ENV} {}", path.display()))?,
        };
        let words = flags_from_env_file(path, &text)?;
        if words.iter().any(|w| w.starts_with(FLAGS_ENV)) {
            bail!(
                "{}: {FLAGS_ENV} cannot be given inside the file",
                path.display()
            );
        }
        let words: Vec<OsString> = words.into_iter().map(OsString::from).collect();
        out.extend(normalize(&words));
    }
    out.extend(rest);
    Ok(out)
}

/// kubelet's flag-name normalisation: `_` in a `--name` (not in its value) is `-`.
fn normalize(args: &[OsString]) -> Vec<OsString> {
    let mut out = Vec::with_capacity(args.len());
    let mut done = false;
    for a in args {
        match a.to_str() {
            Some("--") => {
                done = true;
                out.push(a.clone());
            }
            Some(s) if !done && s.starts_with("--") && s.contains('_') => {
                let (name, value) = match s.split_once('=') {
                    Some((n, v)) => (n, Some(v)),
                    None => (s, None),
                };
                let mut n = name.replace('_', "-");
                if let Some(v) = value {
                    n.push('=');
                    n.push_str(v);
                }
                out.push(OsString::from(n));
            }
            _ => out.push(a.clone()),
        }
    }
    out
}

/// The kubelet flags of a kubeadm-flags.env file: the words of `KUBELET_KUBEADM_ARGS` then of
/// `KUBELET_EXTRA_ARGS`, split at whitespace as systemd splits an unbraced `$VAR` in
/// `ExecStart`. Other variables are ignored; a line that is not a variable assignment is an
/// error naming the file and line.
pub fn flags_from_env_file(path: &Path, text: &str) -> Result<Vec<String>> {
    let vars = parse_env_file(text)
        .map_err(|(line, e)| anyhow::anyhow!("{}:{line}: {e}", path.display()))?;
    let mut words = Vec::new();
    for want in ARGS_VARIABLES {
        // As systemd, a variable assigned twice keeps its last value.
        if let Some((_, v)) = vars.iter().rev().find(|(k, _)| k == want) {
            words.extend(v.split_whitespace().map(str::to_string));
        }
    }
    Ok(words)
}

/// Parses an environment file as systemd's `EnvironmentFile=` reads it: `KEY=VALUE` lines,
/// blank lines and `#`/`;` comments; a value may be in double quotes (with `\` escapes) or
/// single quotes. Errors carry the 1-based line number.
fn parse_env_file(text: &str) -> Result<Vec<(String, String)>, (usize, String)> {
    let mut out = Vec::new();
    for (idx, raw) in text.lines().enumerate() {
        let line_no = idx + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| (line_no, format!("expected KEY=VALUE, got {line:?}")))?;
        let key = key.trim_end();
        let valid_key = key
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid_key {
            return Err((line_no, format!("{key:?} is not a variable name")));
        }
        let value = unquote(value.trim_start()).map_err(|e| (line_no, format!("{key}: {e}")))?;
        out.push((key.to_string(), value));
    }
    Ok(out)
}

/// One value of an environment file: quoted (the whole value) or bare.
fn unquote(v: &str) -> Result<String, String> {
    let mut chars = v.chars();
    let quote = match chars.next() {
        Some(q @ ('"' | '\'')) => q,
        _ => return Ok(v.trim_end().to_string()),
    };
    let mut out = String::new();
    loop {
        match chars.next() {
            None => return Err(format!("unterminated {quote} quote")),
            Some(c) if c == quote => break,
            Some('\\') if quote == '"' => match chars.next() {
                Some(c @ ('"' | '\\' | '$' | '`')) => out.push(c),
                Some(c) => {
                    out.push('\\');
                    out.push(c);
                }
                None => return Err("unterminated \" quote".into()),
            },
            Some(c) => out.push(c),
        }
    }
    let trailing = chars.as_str().trim();
    if !trailing.is_empty() {
        return Err(format!("unexpected {trailing:?} after the closing quote"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::tests::parse_args;

    #[test]
    fn value_shapes() {
        for (kind, ok, bad) in [
            (
                Kind::Duration,
                &["2m", "0s", "-1s", "1h30m", "0"][..],
                &["soon", "20", ""][..],
            ),
            (
                Kind::Int32,
                &["-999", "0x10", "010", "2147483647"],
                &["1.5", "x", "2147483648"],
            ),
            (
                Kind::Int64,
                &["2147483648", "-1"],
                &["9223372036854775808", "1e3"],
            ),
            (Kind::Level, &["0", "4"], &["-1", "two"]),
            (Kind::Map, &["cpu=200m,memory=1Gi", ""], &["cpu"]),
            (
                Kind::LangleMap,
                &["memory.available<100Mi,nodefs.available<10%"],
                &["memory.available=1"],
            ),
            (Kind::BoolMap, &["A=true,B=false"], &["A=yes", "A"]),
            (Kind::VModule, &["foo=2,bar*=4"], &["foo=x"]),
            (
                Kind::Quantity,
                &["0", "512", "1Ki", "2M", "1.5", "1e3", "100m"],
                &["1KB", "x", ""],
            ),
        ] {
            let parse = |s: &str| -> Result<(), String> {
                let cmd = Command::new("t").arg(ignored_arg("x", kind));
                cmd.try_get_matches_from(["t", &format!("--x={s}")])
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            };
            for v in ok {
                assert!(parse(v).is_ok(), "{kind:?} {v:?}: {:?}", parse(v));
            }
            for v in bad {
                assert!(parse(v).is_err(), "{kind:?} {v:?} accepted");
            }
        }
    }

    /// Every kubelet v1.34 flag parses in kubelet's forms: `--f=v`, `--f v`, and for booleans
    /// `--f` and `--f=false`.
    #[test]
    fn every_kubelet_flag_is_accepted() {
        for &(name, kind) in IGNORED {
            let value = match kind {
                Kind::Bool => "false",
                Kind::Str | Kind::Strings => "x",
                Kind::Duration => "1m",
                Kind::Int32 | Kind::Int64 | Kind::Level => "2",
                Kind::Map | Kind::BoolMap | Kind::VModule => "a=1",
                Kind::LangleMap => "a<1",
                Kind::Quantity => "1Ki",
            };
            let eq = format!("--{name}={value}");
            let a = parse_args(&[&eq]).unwrap_or_else(|e| panic!("{eq}: {e}"));
            assert_eq!(a.kubelet.given, vec![format!("--{name}")]);
            if kind == Kind::Bool {
                let a = parse_args(&[&format!("--{name}")]).unwrap();
                assert_eq!(a.kubelet.given.len(), 1);
                assert!(parse_args(&[&format!("--{name}=maybe")]).is_err());
            } else {
                let flag = format!("--{name}");
                let a = parse_args(&[&flag, value]).unwrap_or_else(|e| panic!("{flag}: {e}"));
                assert_eq!(a.kubelet.given.len(), 1);
                assert!(parse_args(&[&flag]).is_err(), "{flag} without a value");
            }
        }
        // The kubelet flags RunArgs implements, in kubelet's forms.
        let a = parse_args(&[
            "--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf",
            "--pod-infra-container-image",
            "registry.k8s.io/pause:3.10.1",
            "--cluster-dns=10.96.0.10,fd00::a",
            "--cluster-domain",
            "cluster.local",
            "--register-node=false",
            "--anonymous-auth",
            "--authentication-token-webhook=false",
            "-v=2",
            "--oom-score-adj",
            "-999",
        ])
        .unwrap();
        assert_eq!(a.register_node, Some(false));
        assert_eq!(a.anonymous_auth, Some(true));
        assert_eq!(a.authentication_token_webhook, Some(false));
        assert_eq!(a.cluster_dns.len(), 2);
        assert_eq!(a.kubelet.given, vec!["--oom-score-adj", "--v"]);
        // Removed or never kubelet flags are errors (clap's unknown argument).
        for flag in [
            "--container-runtime=remote",
            "--network-plugin=cni",
            "--no-such-flag",
        ] {
            let e = parse_args(&[flag]).unwrap_err().to_string();
            assert!(e.contains("unexpected argument"), "{flag}: {e}");
        }
        // A boolean takes no separate word, as in pflag.
        assert!(parse_args(&["--fail-swap-on", "false"]).is_err());
    }

    #[test]
    fn repeated_flags_take_the_last_value_as_pflag() {
        let a = parse_args(&[
            "--node-ip=10.0.0.1",
            "--node-ip",
            "10.0.0.2",
            "--max-pods=1",
            "--max-pods=2",
        ])
        .unwrap();
        assert_eq!(a.node_ip, Some("10.0.0.2".parse().unwrap()));
        assert_eq!(a.kubelet.given, vec!["--max-pods"]);
    }

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn run_argv_normalizes_and_reads_the_env_file() {
        assert_eq!(
            run_argv(os(&[
                "s",
                "run",
                "--fail_swap_on=false",
                "--hostname-override",
                "a_b"
            ]))
            .unwrap(),
            os(&[
                "s",
                "run",
                "--fail-swap-on=false",
                "--hostname-override",
                "a_b"
            ])
        );
        // Other commands are left alone.
        assert_eq!(
            run_argv(os(&["s", "get", "--x_y"])).unwrap(),
            os(&["s", "get", "--x_y"])
        );
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("kubeadm-flags.env");
        std::fs::write(&f, "KUBELET_KUBEADM_ARGS=\"--hostname-override=cp-1 --pod-infra-container-image=registry.k8s.io/pause:3.10.1\"\n").unwrap();
        let fs = f.to_str().unwrap();
        // The file's flags come first, so the command line's win.
        assert_eq!(
            run_argv(os(&[
                "s",
                "run",
                "--kubeadm-flags-env",
                fs,
                "--hostname-override=x"
            ]))
            .unwrap(),
            os(&[
                "s",
                "run",
                "--hostname-override=cp-1",
                "--pod-infra-container-image=registry.k8s.io/pause:3.10.1",
                "--kubeadm-flags-env",
                fs,
                "--hostname-override=x"
            ])
        );
        let a = parse_args_via_run_argv(&[&format!("--kubeadm-flags-env={fs}")]);
        assert_eq!(a.hostname_override.as_deref(), Some("cp-1"));
        assert_eq!(
            a.pod_infra_container_image.as_deref(),
            Some("registry.k8s.io/pause:3.10.1")
        );
        let e = run_argv(os(&[
            "s",
            "run",
            "--kubeadm-flags-env=/nonexistent/kubeadm-flags.env",
        ]))
        .unwrap_err();
        assert!(
            format!("{e:#}").contains("/nonexistent/kubeadm-flags.env"),
            "{e:#}"
        );
    }

    fn parse_args_via_run_argv(args: &[&str]) -> crate::options::RunArgs {
        let mut v = vec!["staticlet", "run"];
        v.extend_from_slice(args);
        let argv = run_argv(os(&v)).unwrap();
        let argv: Vec<String> = argv[2..]
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        parse_args(&argv).unwrap()
    }

    #[test]
    fn env_files() {
        let p = Path::new("/var/lib/kubelet/kubeadm-flags.env");
        for (text, want) in [
            // What kubeadm v1.34 writes (`kubeadm init phase kubelet-start`).
            (
                "KUBELET_KUBEADM_ARGS=\"--hostname-override=cp-1 --pod-infra-container-image=registry.k8s.io/pause:3.10.1\"\n",
                &["--hostname-override=cp-1", "--pod-infra-container-image=registry.k8s.io/pause:3.10.1"][..],
            ),
            // Older kubeadm, with the runtime endpoint and the node IP, and an /etc/default/kubelet.
            (
                "# written by kubeadm\n\nKUBELET_KUBEADM_ARGS=\"--container-runtime-endpoint=unix:///var/run/containerd/containerd.sock --node-ip=10.0.0.5  --pod-infra-container-image=registry.k8s.io/pause:3.10\"\nKUBELET_EXTRA_ARGS='--fail-swap-on=false'\nOTHER=ignored\n",
                &[
                    "--container-runtime-endpoint=unix:///var/run/containerd/containerd.sock",
                    "--node-ip=10.0.0.5",
                    "--pod-infra-container-image=registry.k8s.io/pause:3.10",
                    "--fail-swap-on=false",
                ],
            ),
            ("KUBELET_EXTRA_ARGS=--v=2 --max-pods=20\n; comment\n", &["--v=2", "--max-pods=20"]),
            ("KUBELET_EXTRA_ARGS=\n", &[]),
            ("KUBELET_EXTRA_ARGS=\"a \\\"b\\\"\"", &["a", "\"b\""]),
        ] {
            assert_eq!(flags_from_env_file(p, text).unwrap(), want, "{text}");
        }
        for (text, line, what) in [
            (
                "KUBELET_KUBEADM_ARGS=\"--node-ip=1.2.3.4\n",
                1,
                "unterminated",
            ),
            (
                "# ok\nKUBELET_KUBEADM_ARGS=\"--a\"\n--node-ip 1.2.3.4\n",
                3,
                "expected KEY=VALUE",
            ),
            ("\n\nKUBELET KUBEADM ARGS=\"x\"\n", 3, "not a variable name"),
            (
                "KUBELET_KUBEADM_ARGS=\"--a\" --b\n",
                1,
                "after the closing quote",
            ),
        ] {
            let e = flags_from_env_file(p, text).unwrap_err().to_string();
            assert!(
                e.starts_with(&format!("/var/lib/kubelet/kubeadm-flags.env:{line}: "))
                    && e.contains(what),
                "{text:?}: {e}"
            );
        }
    }

    #[test]
    fn register_with_taints_parses_kubelets_syntax() {
        assert_eq!(
            parse_taints("a=b:NoSchedule, c:NoExecute").unwrap().0,
            vec![
                ("a".into(), "b".into(), "NoSchedule".into()),
                ("c".into(), String::new(), "NoExecute".into())
            ]
        );
        for bad in ["a=b", "a:Nope", "=b:NoSchedule"] {
            assert!(parse_taints(bad).is_err(), "{bad} accepted");
        }
    }
}
