//! Build arguments as Docker's legacy builder scopes them: the values
//! given with the build (`--build-arg`, the API's `buildargs`), the
//! global ARGs before the first FROM (usable in FROM lines, and inside a
//! stage once it declares them again without a value), the ARGs a stage
//! declares (a given value beats the default), and the predefined proxy
//! arguments, usable undeclared when given, but kept out of the history.
//!
//! A RUN sees the arguments in effect as environment variables under the
//! image's own ENV (ENV wins), and its history line starts with them,
//! sorted, as `|2 A=1 B=2 /bin/sh -c ...`, so a changed value misses the
//! cache.

use std::collections::{BTreeMap, BTreeSet};

use super::dockerfile::PROXY_ARGS;

/// The arguments of one stage.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StageArgs {
    /// Given with the build; `None`: named without a value (unset).
    given: BTreeMap<String, Option<String>>,
    /// The global ARGs' values.
    global: BTreeMap<String, String>,
    /// Declared in this stage so far, with their defaults.
    declared: BTreeMap<String, Option<String>>,
}

impl StageArgs {
    pub fn new(given: &BTreeMap<String, Option<String>>, global: &[(String, String)]) -> StageArgs {
        StageArgs {
            given: given.clone(),
            global: global.iter().cloned().collect(),
            declared: BTreeMap::new(),
        }
    }

    /// An ARG instruction's name and default (its variables expanded).
    pub fn declare(&mut self, name: &str, default: Option<String>) {
        self.declared.insert(name.to_string(), default);
    }

    /// An argument's value: given with the build, else its default here,
    /// else the global one (for an ARG that names a global without a
    /// default). Proxy arguments have one only when given.
    pub fn value(&self, name: &str) -> Option<String> {
        let declared = self.declared.get(name);
        let builtin = PROXY_ARGS.contains(&name);
        if declared.is_none() && !builtin {
            return None;
        }
        if let Some(Some(value)) = self.given.get(name) {
            return Some(value.clone());
        }
        match declared {
            Some(Some(default)) => Some(default.clone()),
            Some(None) => self.global.get(name).cloned(),
            None => None,
        }
    }

    /// Every argument in effect with its value, by name.
    pub fn in_effect(&self) -> BTreeMap<String, String> {
        let names: BTreeSet<&str> = self
            .declared
            .keys()
            .map(String::as_str)
            .chain(PROXY_ARGS)
            .collect();
        names
            .into_iter()
            .filter_map(|name| self.value(name).map(|value| (name.to_string(), value)))
            .collect()
    }

    /// What `${...}` sees at this step: the arguments, under the image's
    /// ENV (`KEY=value` entries; ENV wins).
    pub fn expansion_env(&self, image_env: &[String]) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self.in_effect().into_iter().collect();
        out.extend(image_env.iter().map(|entry| match entry.split_once('=') {
            Some((key, value)) => (key.to_string(), value.to_string()),
            None => (entry.clone(), String::new()),
        }));
        out
    }

    /// The arguments a RUN gets as environment variables: those the
    /// image's ENV does not set, `KEY=value`, sorted.
    pub fn run_env(&self, image_env: &[String]) -> Vec<String> {
        let set: BTreeSet<&str> = image_env
            .iter()
            .map(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k))
            .collect();
        self.in_effect()
            .into_iter()
            .filter(|(key, _)| !set.contains(key.as_str()))
            .map(|(key, value)| format!("{key}={value}"))
            .collect()
    }

    /// A RUN's history line: its command, after `|N KEY=value...` for the
    /// arguments it gets, proxy arguments left out unless declared.
    pub fn run_created_by(&self, image_env: &[String], command: &[String]) -> String {
        let shown: Vec<String> = self
            .run_env(image_env)
            .into_iter()
            .filter(|entry| {
                let key = entry.split_once('=').map_or(entry.as_str(), |(k, _)| k);
                self.declared.contains_key(key) || !PROXY_ARGS.contains(&key)
            })
            .collect();
        if shown.is_empty() {
            return command.join(" ");
        }
        format!("|{} {} {}", shown.len(), shown.join(" "), command.join(" "))
    }
}

/// The given arguments no ARG of the build declared (nor a proxy one), for
/// Docker's warning `[Warning] One or more build-args [a b] were not
/// consumed`.
pub fn unused(
    given: &BTreeMap<String, Option<String>>,
    declared_anywhere: &BTreeSet<String>,
) -> Vec<String> {
    given
        .keys()
        .filter(|name| !declared_anywhere.contains(*name) && !PROXY_ARGS.contains(&name.as_str()))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn given(pairs: &[(&str, Option<&str>)]) -> BTreeMap<String, Option<String>> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.map(str::to_string)))
            .collect()
    }

    #[test]
    fn a_declared_default_is_replaced_by_a_given_value() {
        let mut args = StageArgs::new(&given(&[("A", Some("given"))]), &[]);
        assert_eq!(args.value("A"), None, "not declared yet");
        args.declare("A", Some("default".into()));
        args.declare("B", Some("b".into()));
        assert_eq!(args.value("A").as_deref(), Some("given"));
        assert_eq!(args.value("B").as_deref(), Some("b"));
        args.declare("C", None);
        assert_eq!(args.value("C"), None);
    }

    #[test]
    fn a_global_arg_needs_declaring_again_in_the_stage() {
        let global = vec![("VERSION".to_string(), "1.0".to_string())];
        let mut args = StageArgs::new(&BTreeMap::new(), &global);
        assert_eq!(args.value("VERSION"), None);
        args.declare("VERSION", None);
        assert_eq!(args.value("VERSION").as_deref(), Some("1.0"));
    }

    #[test]
    fn proxy_args_work_undeclared_but_stay_out_of_the_history() {
        let mut args = StageArgs::new(
            &given(&[("http_proxy", Some("http://p:3128")), ("X", Some("1"))]),
            &[],
        );
        assert_eq!(args.value("http_proxy").as_deref(), Some("http://p:3128"));
        assert_eq!(args.value("HTTPS_PROXY"), None);
        args.declare("X", None);
        let command = vec!["/bin/sh".to_string(), "-c".to_string(), "true".to_string()];
        assert_eq!(
            args.run_env(&[]),
            vec!["X=1".to_string(), "http_proxy=http://p:3128".to_string()]
        );
        assert_eq!(args.run_created_by(&[], &command), "|1 X=1 /bin/sh -c true");
        args.declare("http_proxy", None);
        assert_eq!(
            args.run_created_by(&[], &command),
            "|2 X=1 http_proxy=http://p:3128 /bin/sh -c true"
        );
    }

    #[test]
    fn env_wins_over_args() {
        let mut args = StageArgs::new(&BTreeMap::new(), &[]);
        args.declare("A", Some("arg".into()));
        let env = vec!["A=env".to_string()];
        let lookup = args.expansion_env(&env);
        assert_eq!(lookup.last(), Some(&("A".to_string(), "env".to_string())));
        assert!(args.run_env(&env).is_empty());
        let command = vec!["true".to_string()];
        assert_eq!(args.run_created_by(&env, &command), "true");
    }

    #[test]
    fn a_given_arg_without_a_value_is_unset() {
        let mut args = StageArgs::new(&given(&[("A", None)]), &[]);
        args.declare("A", Some("default".into()));
        assert_eq!(args.value("A").as_deref(), Some("default"));
    }

    #[test]
    fn unused_arguments_are_named() {
        let declared = BTreeSet::from(["A".to_string()]);
        let given = given(&[("A", Some("1")), ("B", Some("2")), ("no_proxy", Some("x"))]);
        assert_eq!(unused(&given, &declared), vec!["B".to_string()]);
    }
}
