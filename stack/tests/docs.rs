//! The README's configuration reference matches the binaries: every flag and environment
//! variable that `--help` lists for the agent, the collector and nunchi-stack is documented.

use std::process::Command;

use nunchi_testkit::{workspace_bin, workspace_root as root};

fn help(binary: &str) -> String {
    let out = Command::new(workspace_bin(binary))
        .arg("--help")
        .env_clear()
        .output()
        .unwrap_or_else(|e| panic!("{binary}: {e}"));
    assert!(out.status.success(), "{binary} --help");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn every_flag_and_environment_variable_is_in_the_readme() {
    let readme = std::fs::read_to_string(root().join("README.md")).expect("README.md");
    let mut missing = Vec::new();
    for binary in ["nunchi-agent", "nunchi-collector", "nunchi-stack"] {
        let text = help(binary);
        let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
        for word in flat.split([' ', ',', '[', ']']) {
            let flag: String = word
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect();
            let flag = flag.as_str();
            if flag.starts_with("--")
                && flag.len() > 2
                && !["--help", "--version"].contains(&flag)
                && !readme.contains(&format!("`{flag}"))
            {
                missing.push(format!("{binary} {flag}"));
            }
        }
        for part in flat.split("[env: ").skip(1) {
            let name: String = part
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            if !readme.contains(&format!("`{name}`")) {
                missing.push(format!("{binary} {name}"));
            }
        }
    }
    missing.sort();
    missing.dedup();
    assert!(missing.is_empty(), "not in README.md: {missing:?}");
}
