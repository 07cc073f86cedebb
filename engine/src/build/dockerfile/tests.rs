//! One test per rule of the Dockerfile reference, and the limits.

use std::collections::BTreeMap;
use std::time::Duration;

use super::instructions::{Command, Healthcheck, Instruction};
use super::parser::parse_nodes;
use super::*;

fn parse_ok(text: &str) -> Dockerfile {
    parse(text).unwrap_or_else(|err| panic!("{err}"))
}

fn error(text: &str) -> String {
    parse(text).unwrap_err().to_string()
}

/// The instructions of the only stage.
fn steps(text: &str) -> Vec<Instruction> {
    let file = parse_ok(text);
    file.stages[0]
        .steps
        .iter()
        .map(|step| step.instruction.clone())
        .collect()
}

fn one(text: &str) -> Instruction {
    steps(&format!("FROM busybox\n{text}\n")).remove(0)
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

// Format: instructions are case-insensitive, one per line.
#[test]
fn instructions_are_case_insensitive() {
    let file = parse_ok("from busybox\nrUn echo hi\n");
    assert_eq!(file.stages[0].base.image, "busybox");
    assert_eq!(
        file.stages[0].steps[0].instruction,
        Instruction::Run(instructions::Run {
            command: Command::Shell("echo hi".into()),
            network: None,
            mounts: vec![],
            heredocs: vec![],
        })
    );
}

#[test]
fn an_unknown_instruction_names_its_line() {
    assert_eq!(
        error("FROM busybox\nRUN true\nfoo bar\n"),
        "Dockerfile parse error line 3: unknown instruction: FOO"
    );
}

#[test]
fn an_empty_dockerfile_is_refused() {
    assert_eq!(parse("").unwrap_err(), ParseError::Empty);
    assert_eq!(
        parse("# only a comment\n\n").unwrap_err(),
        ParseError::Empty
    );
}

#[test]
fn the_first_instruction_is_from_or_arg() {
    assert_eq!(
        error("RUN true\nFROM busybox\n"),
        "Dockerfile parse error line 1: no build stage in current context"
    );
    assert_eq!(
        error("ARG a=b\n"),
        "Dockerfile parse error line 1: no build stage in current context"
    );
}

// Comments: a `#` starting a line (after blanks); elsewhere it is an argument.
#[test]
fn comments_are_removed_but_not_inside_arguments() {
    let file = parse_ok("# c\n  # indented\nFROM busybox\nRUN echo # not a comment\n");
    assert_eq!(file.stages[0].line, 3);
    assert_eq!(file.stages[0].steps[0].original, "RUN echo # not a comment");
}

// Line continuations, with comment and empty lines inside them skipped.
#[test]
fn continuations_join_lines() {
    let text = "FROM busybox\nRUN echo a \\\n  b \\\n# comment\n\n   c\nRUN next\n";
    let file = parse_ok(text);
    assert_eq!(file.stages[0].steps[0].original, "RUN echo a   b    c");
    assert_eq!(file.stages[0].steps[0].line, 2);
    assert_eq!(file.stages[0].steps[1].line, 7);
}

#[test]
fn blanks_after_a_continuation_character_are_allowed() {
    let file = parse_ok("FROM busybox\nRUN a \\  \t\nb\n");
    assert_eq!(file.stages[0].steps[0].original, "RUN a b");
}

#[test]
fn windows_line_endings_and_a_byte_order_mark() {
    let file = parse_ok("\u{feff}FROM busybox\r\nRUN a \\\r\nb\r\n");
    assert_eq!(file.stages[0].steps[0].original, "RUN a b");
}

// Parser directives.
#[test]
fn the_escape_directive_changes_the_continuation_character() {
    let file = parse_ok("# escape=`\nFROM busybox\nRUN dir c:\\ `\n  && echo\n");
    assert_eq!(file.directives.escape, '`');
    assert_eq!(file.stages[0].steps[0].original, "RUN dir c:\\   && echo");
}

#[test]
fn directives_are_case_insensitive_and_spaced() {
    let file = parse_ok("#  ESCAPE = ` \n# syntax=docker/dockerfile:1\nFROM busybox\n");
    assert_eq!(file.directives.escape, '`');
    assert_eq!(
        file.directives.syntax.as_deref(),
        Some("docker/dockerfile:1")
    );
}

#[test]
fn directives_are_only_read_at_the_top() {
    let file = parse_ok("# comment\n# escape=`\nFROM busybox\n");
    assert_eq!(file.directives.escape, '\\');
    let file = parse_ok("\n# escape=`\nFROM busybox\n");
    assert_eq!(file.directives.escape, '\\');
    let file = parse_ok("# unknowndirective=x\n# escape=`\nFROM busybox\n");
    assert_eq!(file.directives.escape, '\\');
}

#[test]
fn a_directive_given_twice_or_a_bad_escape_is_an_error() {
    assert_eq!(
        error("# escape=`\n# escape=\\\nFROM busybox\n"),
        "Dockerfile parse error line 2: only one escape parser directive can be used"
    );
    assert_eq!(
        error("# escape=x\nFROM busybox\n"),
        "Dockerfile parse error line 1: invalid escape token 'x' does not match ` or \\"
    );
}

// FROM
#[test]
fn from_with_a_stage_name_and_a_platform() {
    let file = parse_ok("FROM --platform=linux/amd64 busybox:1 AS Build\n");
    let base = &file.stages[0].base;
    assert_eq!(base.image, "busybox:1");
    assert_eq!(base.name.as_deref(), Some("build"));
    assert_eq!(base.platform.as_deref(), Some("linux/amd64"));
}

#[test]
fn from_errors() {
    assert_eq!(
        error("FROM a b\n"),
        "Dockerfile parse error line 1: FROM requires either one or three arguments"
    );
    assert_eq!(
        error("FROM a AS 1x\n"),
        "Dockerfile parse error line 1: invalid name for build stage: \"1x\", name can't start with a number or contain symbols"
    );
    assert_eq!(
        error("FROM a AS x\nFROM b AS X\n"),
        "Dockerfile parse error line 2: duplicate stage name \"x\""
    );
    assert_eq!(
        error("FROM --bogus=1 a\n"),
        "Dockerfile parse error line 1: Unknown flag: bogus"
    );
}

// ARG before FROM, build args, and their expansion in FROM.
#[test]
fn global_args_feed_from() {
    let file = parse_ok("ARG TAG=1.36\nARG IMG=busybox:${TAG}\nFROM $IMG\n");
    let values = file.global_arg_values(&BTreeMap::new()).unwrap();
    assert_eq!(values, env(&[("TAG", "1.36"), ("IMG", "busybox:1.36")]));
    let base = Instruction::From(file.stages[0].base.clone())
        .expand(&values, '\\')
        .unwrap();
    match base {
        Instruction::From(from) => assert_eq!(from.image, "busybox:1.36"),
        other => panic!("{other:?}"),
    }
    let build_args = BTreeMap::from([("TAG".to_string(), "2".to_string())]);
    let values = file.global_arg_values(&build_args).unwrap();
    assert_eq!(values, env(&[("TAG", "2"), ("IMG", "busybox:2")]));
}

#[test]
fn an_arg_without_default_or_build_arg_has_no_value() {
    let file = parse_ok("ARG A\nFROM busybox\n");
    assert!(file.global_arg_values(&BTreeMap::new()).unwrap().is_empty());
}

// RUN: shell and exec forms.
#[test]
fn run_shell_and_exec_forms() {
    assert_eq!(
        one("RUN [\"echo\", \"a b\"]"),
        Instruction::Run(instructions::Run {
            command: Command::Exec(vec!["echo".into(), "a b".into()]),
            network: None,
            mounts: vec![],
            heredocs: vec![],
        })
    );
    // Not valid JSON: the shell form, as written.
    match one("RUN [\"echo\", 'x']") {
        Instruction::Run(run) => assert_eq!(run.command, Command::Shell("[\"echo\", 'x']".into())),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        error("FROM a\nRUN [\"a\", 1]\n"),
        "Dockerfile parse error line 2: when using JSON array syntax, arrays must be comprised of strings only"
    );
    assert_eq!(
        error("FROM a\nRUN\n"),
        "Dockerfile parse error line 2: RUN requires at least one argument"
    );
}

#[test]
fn run_flags() {
    match one("RUN --network=none --mount=type=cache,target=/c true") {
        Instruction::Run(run) => {
            assert_eq!(run.network.as_deref(), Some("none"));
            assert_eq!(run.mounts, vec!["type=cache,target=/c"]);
            assert_eq!(run.command, Command::Shell("true".into()));
        }
        other => panic!("{other:?}"),
    }
}

// Heredocs.
#[test]
fn run_with_a_heredoc() {
    let text = "FROM busybox\nRUN <<EOF\necho $HOME\necho two\nEOF\nRUN after\n";
    let file = parse_ok(text);
    match &file.stages[0].steps[0].instruction {
        Instruction::Run(run) => {
            assert_eq!(run.command, Command::Shell("<<EOF".into()));
            assert_eq!(run.heredocs.len(), 1);
            assert_eq!(run.heredocs[0].name, "EOF");
            assert_eq!(run.heredocs[0].content, "echo $HOME\necho two\n");
            assert!(run.heredocs[0].expand);
            assert!(!run.heredocs[0].chomp);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(file.stages[0].steps[1].line, 6);
}

#[test]
fn heredoc_variants() {
    let text = "FROM busybox\nRUN 3<<-'END' cat <<\"B\"\n\tone\n\tEND\ntwo\nB\n";
    let file = parse_ok(text);
    match &file.stages[0].steps[0].instruction {
        Instruction::Run(run) => {
            assert_eq!(run.heredocs.len(), 2);
            assert_eq!(run.heredocs[0].fd, 3);
            assert!(run.heredocs[0].chomp);
            assert!(!run.heredocs[0].expand);
            // `<<-`: the content's leading tabs go, as the terminator's.
            assert_eq!(run.heredocs[0].content, "one\n");
            assert_eq!(run.heredocs[1].name, "B");
            assert_eq!(run.heredocs[1].content, "two\n");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn copy_with_a_heredoc() {
    match one("COPY <<EOF /etc/motd\nhello\nEOF") {
        Instruction::Copy(copy) => {
            assert_eq!(copy.sources, vec!["<<EOF"]);
            assert_eq!(copy.dest, "/etc/motd");
            assert_eq!(copy.heredocs[0].content, "hello\n");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn copy_with_several_heredocs_and_a_checksum_flag() {
    match one("COPY <<A <<-\"B\" /dir/\na $X\nA\n\t\tb $X\n\tB") {
        Instruction::Copy(copy) => {
            assert_eq!(copy.sources, vec!["<<A", "<<-\"B\""]);
            assert_eq!(copy.heredocs[0].content, "a $X\n");
            assert!(copy.heredocs[0].expand);
            assert_eq!(copy.heredocs[1].content, "b $X\n");
            assert!(!copy.heredocs[1].expand);
        }
        other => panic!("{other:?}"),
    }
    let hex = "0".repeat(64);
    match one(&format!("ADD --checksum=sha256:{hex} http://h/f /f")) {
        Instruction::Add(add) => assert_eq!(add.checksum, Some(format!("sha256:{hex}"))),
        other => panic!("{other:?}"),
    }
    assert!(parse(&format!("FROM a\nCOPY --checksum=sha256:{hex} f /f\n")).is_err());
}

#[test]
fn heredoc_content_expansion_keeps_quotes() {
    use super::shell::expand_heredoc;
    let env = vec![("X".to_string(), "1".to_string())];
    assert_eq!(
        expand_heredoc("a \"$X\" '${X}' \\$X ${Y:-d}\n", &env, '\\').unwrap(),
        "a \"1\" '1' $X d\n"
    );
}

#[test]
fn an_unterminated_heredoc_is_an_error() {
    assert_eq!(
        error("FROM a\nRUN <<EOF\necho\n"),
        "Dockerfile parse error line 2: unterminated heredoc"
    );
}

#[test]
fn heredocs_only_in_run_copy_add_and_not_in_json() {
    let nodes = parse_nodes("FROM a\nCMD <<EOF\nRUN [\"<<EOF\"]\n")
        .unwrap()
        .1;
    assert!(nodes.iter().all(|node| node.heredocs.is_empty()));
    assert_eq!(nodes.len(), 3);
}

// CMD, ENTRYPOINT, SHELL
#[test]
fn cmd_and_entrypoint() {
    assert_eq!(
        one("CMD [\"sh\", \"-c\", \"x\"]"),
        Instruction::Cmd(Command::Exec(vec!["sh".into(), "-c".into(), "x".into()]))
    );
    assert_eq!(
        one("CMD echo $HOME"),
        Instruction::Cmd(Command::Shell("echo $HOME".into()))
    );
    assert_eq!(
        one("ENTRYPOINT []"),
        Instruction::Entrypoint(Command::Exec(vec![]))
    );
    assert_eq!(one("CMD"), Instruction::Cmd(Command::Exec(vec![])));
}

#[test]
fn shell_needs_json() {
    assert_eq!(
        one("SHELL [\"/bin/bash\", \"-c\"]"),
        Instruction::Shell(vec!["/bin/bash".into(), "-c".into()])
    );
    assert_eq!(
        error("FROM a\nSHELL /bin/bash -c\n"),
        "Dockerfile parse error line 2: SHELL requires the arguments to be in JSON form"
    );
    assert_eq!(
        error("FROM a\nSHELL []\n"),
        "Dockerfile parse error line 2: SHELL requires at least one argument"
    );
}

// ENV and LABEL: both forms.
#[test]
fn env_pairs_and_the_old_form() {
    assert_eq!(
        one("ENV A=1 B=\"two words\" C=three\\ words"),
        Instruction::Env(env(&[
            ("A", "1"),
            ("B", "\"two words\""),
            ("C", "three\\ words")
        ]))
    );
    assert_eq!(
        one("ENV A one two"),
        Instruction::Env(env(&[("A", "one two")]))
    );
    assert_eq!(
        error("FROM a\nENV A=1 B\n"),
        "Dockerfile parse error line 2: Syntax error - can't find = in \"B\". Must be of the form: name=value"
    );
    assert_eq!(
        error("FROM a\nENV A\n"),
        "Dockerfile parse error line 2: ENV must have two arguments"
    );
    assert_eq!(
        error("FROM a\nENV =x\n"),
        "Dockerfile parse error line 2: ENV names can not be blank"
    );
    assert_eq!(
        error("FROM a\nENV\n"),
        "Dockerfile parse error line 2: ENV requires at least one argument"
    );
}

#[test]
fn env_values_are_expanded_and_unquoted() {
    let instruction = one("ENV B=\"two $A\" C=three\\ words D='$A'");
    let expanded = instruction.expand(&env(&[("A", "x")]), '\\').unwrap();
    assert_eq!(
        expanded,
        Instruction::Env(env(&[("B", "two x"), ("C", "three words"), ("D", "$A")]))
    );
}

#[test]
fn labels() {
    let instruction = one("LABEL \"com.example.vendor\"=\"ACME Inc\" version=1.0");
    assert_eq!(
        instruction.expand(&env(&[]), '\\').unwrap(),
        Instruction::Label(env(&[
            ("com.example.vendor", "ACME Inc"),
            ("version", "1.0")
        ]))
    );
}

// ARG
#[test]
fn args_with_and_without_defaults() {
    assert_eq!(
        one("ARG A B=2 C=\"x y\""),
        Instruction::Arg(vec![
            ("A".into(), None),
            ("B".into(), Some("2".into())),
            ("C".into(), Some("\"x y\"".into()))
        ])
    );
    assert_eq!(
        error("FROM a\nARG =1\n"),
        "Dockerfile parse error line 2: ARG names can not be blank"
    );
}

// EXPOSE, VOLUME, USER, WORKDIR, STOPSIGNAL, MAINTAINER
#[test]
fn expose_volume_and_single_values() {
    assert_eq!(
        one("EXPOSE 80 443/tcp $P/udp")
            .expand(&env(&[("P", "53")]), '\\')
            .unwrap(),
        Instruction::Expose(vec!["80".into(), "443/tcp".into(), "53/udp".into()])
    );
    assert_eq!(
        one("VOLUME [\"/a\", \"/b\"]"),
        Instruction::Volume(vec!["/a".into(), "/b".into()])
    );
    assert_eq!(
        one("VOLUME /a /b"),
        Instruction::Volume(vec!["/a".into(), "/b".into()])
    );
    assert_eq!(
        error("FROM a\nVOLUME [\"\"]\n"),
        "Dockerfile parse error line 2: VOLUME specified can not be an empty string"
    );
    assert_eq!(
        one("USER ${U:-app}:grp").expand(&env(&[]), '\\').unwrap(),
        Instruction::User("app:grp".into())
    );
    assert_eq!(
        one("WORKDIR $D/sub")
            .expand(&env(&[("D", "/srv")]), '\\')
            .unwrap(),
        Instruction::Workdir("/srv/sub".into())
    );
    assert_eq!(
        one("STOPSIGNAL SIGKILL"),
        Instruction::StopSignal("SIGKILL".into())
    );
    assert_eq!(
        one("MAINTAINER Jo <jo@x>"),
        Instruction::Maintainer("Jo <jo@x>".into())
    );
    assert_eq!(
        error("FROM a\nWORKDIR\n"),
        "Dockerfile parse error line 2: WORKDIR requires exactly one argument"
    );
}

// Instructions Docker does not expand keep their variables for the shell.
#[test]
fn run_cmd_and_healthcheck_are_not_expanded() {
    let instruction = one("RUN echo $A");
    assert_eq!(
        instruction.expand(&env(&[("A", "x")]), '\\').unwrap(),
        instruction
    );
    let instruction = one("CMD echo $A");
    assert_eq!(
        instruction.expand(&env(&[("A", "x")]), '\\').unwrap(),
        instruction
    );
}

// HEALTHCHECK
#[test]
fn healthcheck_forms() {
    assert_eq!(
        one("HEALTHCHECK --interval=5s --timeout=1m30s --start-period=100ms --retries=3 CMD curl -f http://x/"),
        Instruction::Healthcheck(Healthcheck {
            test: vec!["CMD-SHELL".into(), "curl -f http://x/".into()],
            interval: Some(Duration::from_secs(5)),
            timeout: Some(Duration::from_secs(90)),
            start_period: Some(Duration::from_millis(100)),
            start_interval: None,
            retries: Some(3),
        })
    );
    match one("HEALTHCHECK CMD [\"true\"]") {
        Instruction::Healthcheck(check) => assert_eq!(check.test, vec!["CMD", "true"]),
        other => panic!("{other:?}"),
    }
    match one("HEALTHCHECK none") {
        Instruction::Healthcheck(check) => assert_eq!(check.test, vec!["NONE"]),
        other => panic!("{other:?}"),
    }
}

#[test]
fn healthcheck_errors() {
    let cases = [
        ("HEALTHCHECK NONE x", "HEALTHCHECK NONE takes no arguments"),
        ("HEALTHCHECK CMD", "Missing command after HEALTHCHECK CMD"),
        (
            "HEALTHCHECK RUN x",
            "Unknown type \"RUN\" in HEALTHCHECK (try CMD)",
        ),
        (
            "HEALTHCHECK --retries=0 CMD x",
            "--retries must be at least 1 (not 0)",
        ),
        (
            "HEALTHCHECK --interval=5 CMD x",
            "time: invalid duration \"5\"",
        ),
        (
            "HEALTHCHECK --interval=1us CMD x",
            "Interval \"interval\" cannot be less than 1ms",
        ),
    ];
    for (line, message) in cases {
        assert_eq!(
            error(&format!("FROM a\n{line}\n")),
            format!("Dockerfile parse error line 2: {message}"),
            "{line}"
        );
    }
}

// ONBUILD
#[test]
fn onbuild_keeps_its_trigger() {
    assert_eq!(
        one("ONBUILD RUN echo hi"),
        Instruction::Onbuild("RUN echo hi".into())
    );
    assert_eq!(
        error("FROM a\nONBUILD ONBUILD RUN x\n"),
        "Dockerfile parse error line 2: Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed"
    );
    assert_eq!(
        error("FROM a\nONBUILD from b\n"),
        "Dockerfile parse error line 2: FROM isn't allowed as an ONBUILD trigger"
    );
}

// COPY and ADD
#[test]
fn copy_with_flags_and_several_sources() {
    match one("COPY --from=build --chown=1:2 --chmod=0750 --link a b* /dst/") {
        Instruction::Copy(copy) => {
            assert_eq!(copy.sources, vec!["a", "b*"]);
            assert_eq!(copy.dest, "/dst/");
            assert_eq!(copy.from.as_deref(), Some("build"));
            assert_eq!(copy.chown.as_deref(), Some("1:2"));
            assert_eq!(copy.chmod.as_deref(), Some("0750"));
            assert!(copy.link);
        }
        other => panic!("{other:?}"),
    }
    match one("ADD [\"a b\", \"/c d\"]") {
        Instruction::Add(copy) => {
            assert_eq!(copy.sources, vec!["a b"]);
            assert_eq!(copy.dest, "/c d");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn copy_errors() {
    assert_eq!(
        error("FROM a\nCOPY x\n"),
        "Dockerfile parse error line 2: COPY requires at least two arguments"
    );
    assert_eq!(
        error("FROM a\nADD --from=x a b\n"),
        "Dockerfile parse error line 2: Unknown flag: from"
    );
    assert_eq!(
        error("FROM a\nCOPY --chown a b\n"),
        "Dockerfile parse error line 2: Missing a value on flag: chown"
    );
    assert_eq!(
        error("FROM a\nCOPY --chown=1 --chown=2 a b\n"),
        "Dockerfile parse error line 2: Duplicate flag specified: chown"
    );
    assert_eq!(
        error("FROM a\nCOPY --link=maybe a b\n"),
        "Dockerfile parse error line 2: Expecting boolean value for flag link, not: maybe"
    );
}

#[test]
fn copy_sources_and_flags_are_expanded() {
    let expanded = one("COPY --chown=$U:$U ${SRC} /opt/$U/")
        .expand(&env(&[("U", "app"), ("SRC", "a.txt")]), '\\')
        .unwrap();
    match expanded {
        Instruction::Copy(copy) => {
            assert_eq!(copy.sources, vec!["a.txt"]);
            assert_eq!(copy.dest, "/opt/app/");
            assert_eq!(copy.chown.as_deref(), Some("app:app"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn quoted_flags_lose_their_quotes() {
    match one("COPY --chown=\"a b\" x y") {
        Instruction::Copy(copy) => assert_eq!(copy.chown.as_deref(), Some("a b")),
        other => panic!("{other:?}"),
    }
}

// Stages, targets, what a target needs.
#[test]
fn stages_and_targets() {
    let file = parse_ok(
        "FROM busybox AS base\nRUN a\n\
         FROM busybox AS unused\nRUN b\n\
         FROM base AS build\nCOPY --from=0 /x /x\n\
         FROM scratch AS final\nCOPY --from=build /y /y\n",
    );
    assert_eq!(file.stages.len(), 4);
    assert_eq!(file.target_index(None).unwrap(), 3);
    assert_eq!(file.target_index(Some("BUILD")).unwrap(), 2);
    assert_eq!(
        file.target_index(Some("nope")).unwrap_err().to_string(),
        "failed to reach build target nope in Dockerfile"
    );
    assert_eq!(file.dependencies(2), vec![0]);
    assert_eq!(file.needed_stages(None).unwrap(), vec![0, 2, 3]);
    assert_eq!(file.needed_stages(Some("unused")).unwrap(), vec![1]);
}

#[test]
fn a_from_with_a_variable_may_need_any_earlier_stage() {
    let file =
        parse_ok("FROM busybox AS a\nFROM busybox AS b\nFROM busybox\nCOPY --from=$X /x /x\n");
    assert_eq!(file.needed_stages(None).unwrap(), vec![0, 1, 2]);
}

// Limits.
#[test]
fn a_huge_dockerfile_is_refused() {
    let text = format!("FROM busybox\n{}", "RUN true\n".repeat(600_000));
    assert!(matches!(
        parse(&text).unwrap_err(),
        ParseError::TooLarge { .. }
    ));
}

#[test]
fn many_instructions_within_the_limit_parse() {
    let text = format!("FROM busybox\n{}", "ENV A=1\n".repeat(50_000));
    let started = std::time::Instant::now();
    assert_eq!(parse_ok(&text).stages[0].steps.len(), 50_000);
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn a_variable_expansion_bomb_is_an_error() {
    let mut file = String::from("FROM busybox\nARG A0=xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\n");
    for level in 1..12 {
        let previous = format!("${{A{}}}", level - 1);
        file.push_str(&format!("ARG A{level}={}\n", previous.repeat(16)));
    }
    let file = format!("{}FROM busybox\n", file.replacen("FROM busybox\n", "", 1));
    let parsed = parse_ok(&file);
    let err = parsed.global_arg_values(&BTreeMap::new()).unwrap_err();
    assert!(
        err.to_string()
            .contains("variable expansion is longer than"),
        "{err}"
    );
}
