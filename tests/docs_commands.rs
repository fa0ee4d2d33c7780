//! The documentation's own commands, checked, so the docs cannot rot: every fenced block of
//! README.md and docs/*.md is read (the convention is in docs/testing.md, "The docs' commands").
//! A `toml` topology must pass `vswitchd --check`; a `vswitchd` or `vswitchctl` command line shown
//! in a `sh` block must be accepted by the real program's parser; the README's `sh demo` block
//! is run, line by line, against the demo it describes (`fixtures/quickstart.toml`, with its
//! namespaces renamed); every link inside the repository leads to a file and heading that exist;
//! every fixture names in its header the command that runs it.

mod support;

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use support::*;

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

/// A fenced code block: where it starts, its language and tags (the info string), its text.
#[derive(Debug)]
struct Block {
    place: String,
    lang: String,
    tags: Vec<String>,
    text: String,
}

/// README.md and every docs/*.md, sorted.
fn doc_files() -> Vec<PathBuf> {
    let mut files = vec![Path::new(ROOT).join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(Path::new(ROOT).join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

fn short(path: &Path) -> String {
    path.strip_prefix(ROOT).unwrap_or(path).display().to_string()
}

/// The fenced blocks of one Markdown file (``` fences at the start of a line).
fn blocks(path: &Path) -> Vec<Block> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut out = Vec::new();
    let mut open: Option<Block> = None;
    for (i, line) in text.lines().enumerate() {
        match (&mut open, line.strip_prefix("```")) {
            (None, Some(info)) => {
                let mut words = info.split_whitespace().map(str::to_string);
                let lang = words.next().unwrap_or_default();
                let place = format!("{}:{}", short(path), i + 1);
                open = Some(Block { place, lang, tags: words.collect(), text: String::new() });
            }
            (Some(_), Some("")) => out.push(open.take().unwrap()),
            (Some(block), _) => {
                block.text.push_str(line);
                block.text.push('\n');
            }
            (None, None) => {}
        }
    }
    assert!(open.is_none(), "{}: a fenced block is never closed", short(path));
    out
}

fn all_blocks() -> Vec<Block> {
    doc_files().iter().flat_map(|f| blocks(f)).collect()
}

/// Splits a shell line into words: quotes and backslashes as the shell takes them, no
/// expansion; `;`, `|`, `||`, `&`, `&&` are words of their own. A `#` starting a word begins a
/// comment.
fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '#' if word.is_none() => break,
            ' ' | '\t' => out.extend(word.take()),
            ';' | '|' | '&' => {
                out.extend(word.take());
                if chars.peek() == Some(&c) && c != ';' {
                    chars.next();
                    out.push(format!("{c}{c}"));
                } else {
                    out.push(c.to_string());
                }
            }
            '\'' => {
                let w = word.get_or_insert_with(String::new);
                w.extend(chars.by_ref().take_while(|&c| c != '\''));
            }
            '"' => {
                let w = word.get_or_insert_with(String::new);
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => w.extend(chars.next()),
                        c => w.push(c),
                    }
                }
            }
            '\\' => word.get_or_insert_with(String::new).extend(chars.next()),
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    out.extend(word);
    out
}

/// The simple commands of a `sh` block, as words, each with its line in the block:
/// continuation lines joined, comments and here-documents left out, split at `&&`, `||`, `;`,
/// `|` and `&`, redirections dropped, and the `ip netns exec NAME` that runs a program in a
/// namespace taken off.
fn commands(block: &Block) -> Vec<(usize, Vec<String>)> {
    let mut out = Vec::new();
    let mut lines = block.text.lines().enumerate();
    let mut heredoc_end: Option<String> = None;
    while let Some((i, first)) = lines.next() {
        if let Some(end) = &heredoc_end {
            if first.trim() == end {
                heredoc_end = None;
            }
            continue;
        }
        let mut line = first.to_string();
        while line.ends_with('\\') {
            line.pop();
            match lines.next() {
                Some((_, next)) => line.push_str(next),
                None => break,
            }
        }
        let mut current = Vec::new();
        let mut all = words(&line);
        all.push(";".into());
        for w in all {
            if let Some(end) = w.strip_prefix("<<") {
                heredoc_end = Some(end.trim_matches(|c| c == '\'' || c == '"' || c == '-').to_string());
                continue;
            }
            if !matches!(w.as_str(), "&&" | "||" | ";" | "|" | "&") {
                current.push(w);
                continue;
            }
            // Drop redirections: `> FILE`, `>FILE`, `2> FILE`, `< FILE`.
            let mut kept = Vec::new();
            let mut skip_next = false;
            for w in std::mem::take(&mut current) {
                if skip_next {
                    skip_next = false;
                } else if matches!(w.as_str(), ">" | ">>" | "<" | "2>" | "2>>") {
                    skip_next = true;
                } else if !(w.starts_with('>') || w.starts_with('<') || w.starts_with("2>")) {
                    kept.push(w);
                }
            }
            if kept.len() > 4 && kept[..3] == ["ip", "netns", "exec"] {
                kept.drain(..4);
            }
            if !kept.is_empty() {
                out.push((i + 1, kept));
            }
        }
    }
    out
}

/// Which of our programs `word` runs, if any: `vswitchctl`, `./target/release/vswitchctl`, ...
fn program(word: &str) -> Option<&'static str> {
    match word.rsplit('/').next()? {
        "vswitchd" => Some("vswitchd"),
        "vswitchctl" => Some("vswitchctl"),
        _ => None,
    }
}

/// A small valid topology, for a command line that names a file the repository lacks
/// (`/etc/vswitchd/br0.toml`).
fn stand_in_topology() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vswitchd-docs-{}", unique_tag()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("topology.toml");
    std::fs::write(&path, "[bridge]\nname = \"docs\"\n\n[[port]]\nname = \"docs0\"\ntype = \"tap\"\n").unwrap();
    path
}

/// Runs `program` with `args` in the repository's root, stdin closed: (status, stdout, stderr).
fn run(program: &str, args: &[String]) -> (Option<i32>, String, String) {
    let out = Command::new(program).args(args).current_dir(ROOT).stdin(Stdio::null()).output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

/// Checks one `vswitchd`/`vswitchctl` command line against the real parser; returns a
/// complaint, or None.
fn check_command_line(which: &str, args: &[String]) -> Option<String> {
    match which {
        "vswitchctl" => {
            // Against a socket that cannot exist: a command line the parser takes fails to
            // connect (status 1); one it refuses is a usage error (status 2) before that.
            let mut args = args.to_vec();
            match args.iter().position(|a| a == "--socket") {
                Some(i) if i + 1 < args.len() => args[i + 1] = "/nonexistent/vswitchd-docs.ctl".into(),
                _ => args
                    .splice(0..0, ["--socket".to_string(), "/nonexistent/vswitchd-docs.ctl".to_string()])
                    .for_each(drop),
            }
            let (code, _, stderr) = run(VSWITCHCTL, &args);
            let help = args.iter().any(|a| matches!(a.as_str(), "--help" | "-h" | "--version" | "-V"));
            let fine = if help { code == Some(0) } else { code == Some(1) && stderr.contains("cannot connect") };
            (!fine).then(|| format!("exit {code:?}: {stderr}"))
        }
        _ => {
            // `--check` added: the whole command line is parsed and the file validated, and
            // nothing is created. A file the repository lacks is replaced by a valid one.
            let mut args = args.to_vec();
            if let Some(i) = args.iter().position(|a| a == "--config") {
                if i + 1 < args.len() && !Path::new(ROOT).join(&args[i + 1]).exists() {
                    args[i + 1] = stand_in_topology().display().to_string();
                }
            }
            args.retain(|a| a != "--takeover");
            if !args.iter().any(|a| a == "--check") {
                args.push("--check".into());
            }
            let (code, _, stderr) = run(VSWITCHD, &args);
            (code != Some(0)).then(|| format!("exit {code:?}: {stderr}"))
        }
    }
}

#[test]
fn every_command_line_shown_is_accepted_by_the_real_programs() {
    let mut checked = 0;
    let mut failures = Vec::new();
    for block in all_blocks() {
        if !matches!(block.lang.as_str(), "sh" | "bash" | "console") || block.tags.iter().any(|t| t == "no-run") {
            continue;
        }
        for (line, words) in commands(&block) {
            let Some(which) = program(&words[0]) else { continue };
            checked += 1;
            if let Some(complaint) = check_command_line(which, &words[1..]) {
                failures.push(format!("{} (+{line}): {}: {complaint}", block.place, words.join(" ")));
            }
        }
    }
    assert!(failures.is_empty(), "command lines in the docs the programs refuse:\n{}", failures.join("\n"));
    assert!(checked >= 20, "only {checked} command lines found: is the block parser broken?");
}

#[test]
fn every_topology_shown_passes_check() {
    let dir = std::env::temp_dir().join(format!("vswitchd-docs-{}", unique_tag()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut checked = 0;
    let mut failures = Vec::new();
    for (n, block) in all_blocks().into_iter().enumerate() {
        if block.lang != "toml" || block.tags.iter().any(|t| t == "fragment" || t == "no-run") {
            continue;
        }
        // A whole topology as it is; a fragment (ports, namespaces) under a [bridge] of its own.
        let whole = block.text.lines().any(|l| l.trim() == "[bridge]");
        let text = if whole { block.text.clone() } else { format!("[bridge]\nname = \"docs\"\n\n{}", block.text) };
        let path = dir.join(format!("block{n}.toml"));
        std::fs::write(&path, &text).unwrap();
        let (code, _, stderr) = run(VSWITCHD, &["--check".into(), "--config".into(), path.display().to_string()]);
        checked += 1;
        if code != Some(0) {
            failures.push(format!("{}: exit {code:?}: {stderr}", block.place));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(failures.is_empty(), "topologies in the docs vswitchd refuses:\n{}", failures.join("\n"));
    assert!(checked >= 5, "only {checked} topologies found");
}

/// GitHub's anchor for a heading: lower case, punctuation other than `-` and `_` dropped,
/// spaces as `-`.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

fn anchors(path: &Path) -> HashSet<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut seen = HashSet::new();
    let mut in_code = false;
    for line in text.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
        }
        if in_code || !line.starts_with('#') {
            continue;
        }
        let base = slug(line.trim_start_matches('#'));
        let mut name = base.clone();
        let mut n = 0;
        while !seen.insert(name.clone()) {
            n += 1;
            name = format!("{base}-{n}");
        }
    }
    seen
}

#[test]
fn every_link_inside_the_repository_leads_somewhere() {
    let mut failures = Vec::new();
    let mut checked = 0;
    for file in doc_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        let mut in_code = false;
        for (i, line) in text.lines().enumerate() {
            if line.starts_with("```") {
                in_code = !in_code;
            }
            if in_code {
                continue;
            }
            for part in line.split("](").skip(1) {
                let Some(target) = part.split(')').next() else { continue };
                if target.contains("://") || target.starts_with("mailto:") {
                    // The README's tour must not send a newcomer out of the repository.
                    if file.ends_with("README.md") {
                        failures.push(format!(
                            "{}:{}: README links outside the repository: {target}",
                            short(&file),
                            i + 1
                        ));
                    }
                    continue;
                }
                checked += 1;
                let (path, anchor) = target.split_once('#').unwrap_or((target, ""));
                let dest = if path.is_empty() { file.clone() } else { file.parent().unwrap().join(path) };
                if !dest.exists() {
                    failures.push(format!("{}:{}: no such file: {target}", short(&file), i + 1));
                } else if !anchor.is_empty() && !anchors(&dest).contains(anchor) {
                    failures.push(format!("{}:{}: no heading #{anchor} in {}", short(&file), i + 1, short(&dest)));
                }
            }
        }
    }
    assert!(failures.is_empty(), "broken links:\n{}", failures.join("\n"));
    assert!(checked >= 20, "only {checked} links found");
}

/// Every fixture says in its header how to run it (`vswitchd --config fixtures/NAME`), and
/// the command lines its header shows are accepted.
#[test]
fn every_fixture_shows_the_command_that_runs_it() {
    let mut failures = Vec::new();
    let mut fixtures: Vec<PathBuf> = std::fs::read_dir(Path::new(ROOT).join("fixtures"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    fixtures.sort();
    assert!(fixtures.len() >= 10);
    for path in &fixtures {
        let name = short(path);
        let text = std::fs::read_to_string(path).unwrap();
        let header: Vec<&str> = text.lines().take_while(|l| l.starts_with('#')).collect();
        let runs_it = format!("vswitchd --config {name}");
        if !header.iter().any(|l| l.contains(&runs_it)) {
            failures.push(format!("{name}: its header does not show `{runs_it}`"));
        }
        // Commands are the indented lines (`#   ip link add ...`) and what follows `Then:`.
        let shown: Vec<&str> = header
            .iter()
            .filter_map(|l| {
                let l = l.trim_start_matches('#');
                let then = l.trim_start().strip_prefix("Then:").or_else(|| l.trim_start().strip_prefix("Afterwards:"));
                then.or_else(|| l.starts_with("  ").then_some(l))
            })
            .collect();
        let block = Block { place: name.clone(), lang: "sh".into(), tags: vec![], text: shown.join("\n") };
        for (_, words) in commands(&block) {
            if program(&words[0]) == Some("vswitchd") || program(&words[0]) == Some("vswitchctl") {
                if let Some(complaint) = check_command_line(program(&words[0]).unwrap(), &words[1..]) {
                    failures.push(format!("{name}: {}: {complaint}", words.join(" ")));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The README's demo, run as a newcomer would: `fixtures/quickstart.toml` (its namespaces and
/// bridge renamed, so that it runs beside anything else), then every line of the README's
/// `sh demo` block against it. `ping` is done in Rust (a fresh machine has no ping binary).
#[test]
fn the_readme_demo_runs() {
    with_tag(|tag| {
        let demo: Vec<Block> = blocks(&Path::new(ROOT).join("README.md"))
            .into_iter()
            .filter(|b| b.lang == "sh" && b.tags.iter().any(|t| t == "demo"))
            .collect();
        assert_eq!(demo.len(), 1, "README.md must have one `sh demo` block");
        let names = ["red", "blue", "green", "ctr1"];
        let renamed: Vec<(String, String)> =
            names.iter().map(|n| (n.to_string(), format!("d{tag}{}", &n[..1]))).collect();
        let mut guard = NamespaceGuard::default();
        let sw = format!("d{tag}sw");
        guard.create(&sw);
        for (_, to) in &renamed {
            guard.adopt(to);
        }
        let bridge = format!("d{tag}q");
        let topology = fixture(
            "quickstart.toml",
            &[("quickstart", &bridge), ("red", &renamed[0].1), ("blue", &renamed[1].1), ("green", &renamed[2].1)],
        );
        let daemon = Daemon::start(&sw, &topology);
        let rename = |word: &str| -> String {
            for (from, to) in &renamed {
                if word == from {
                    return to.clone();
                }
                if let Some((key, value)) = word.split_once('=') {
                    if value == from && key == "netns" {
                        return format!("{key}={to}");
                    }
                }
            }
            word.to_string()
        };
        let mut ran = 0;
        for block in &demo {
            let mut lines = block.text.lines();
            for raw in lines.by_ref() {
                let words: Vec<String> = words(raw).iter().map(|w| rename(w)).collect();
                if words.is_empty() {
                    continue;
                }
                ran += 1;
                let shown = raw.split(" #").next().unwrap_or(raw).trim();
                match words.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
                    ["ip", "netns", "exec", ns, "ping", "-c", count, addr] => {
                        let count: u16 = count.parse().unwrap();
                        let addr: Ipv4Addr = addr.parse().unwrap();
                        let replies = ping(ns, addr, count, Duration::from_secs(10));
                        assert_eq!(replies, count, "README demo: `{shown}` got {replies} replies");
                    }
                    [first, args @ ..] if program(first) == Some("vswitchctl") => {
                        let out = daemon.ctl(args).unwrap_or_else(|e| panic!("README demo: `{shown}` failed: {e}"));
                        if args.contains(&"show") {
                            assert!(!out.trim().is_empty(), "README demo: `{shown}` printed nothing");
                        }
                    }
                    _ => panic!("README demo: the test does not know how to run `{shown}`"),
                }
            }
        }
        assert!(ran >= 5, "the README demo has only {ran} commands");
        // What the demo promises: learned MACs and a port per host.
        let fdb = daemon.ctl(&["fdb", "show"]).unwrap();
        assert!(fdb.contains("02:00:00:00:0f:01") && fdb.contains("02:00:00:00:0f:02"), "{fdb}");
        drop(daemon);
        drop(guard);
    });
}
