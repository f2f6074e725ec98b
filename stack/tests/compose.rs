//! `docker/` stays runnable without a Docker engine: the compose file parses, every service
//! built from this repository names a multi-stage Dockerfile whose image runs as a non-root
//! user, and every command line, flag and environment variable the compose file and the
//! Dockerfiles give a binary is one that binary accepts (checked by running it with the
//! same arguments and `--help`, and against the environment variables its `--help` lists).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use nunchi_testkit::{workspace_bin as bin, workspace_root as root};
use serde::Deserialize;

#[derive(Deserialize)]
struct Compose {
    services: BTreeMap<String, Service>,
}

#[derive(Deserialize)]
struct Service {
    image: Option<String>,
    build: Option<Build>,
    entrypoint: Option<Vec<String>>,
    command: Option<Vec<String>>,
    #[serde(default)]
    environment: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct Build {
    context: String,
    dockerfile: String,
}

/// The final stage of a Dockerfile: its USER, ENTRYPOINT program and ENV names.
struct Image {
    stages: usize,
    user: Option<String>,
    entrypoint: Option<String>,
    env: Vec<String>,
}

fn read_dockerfile(path: &Path) -> Image {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let joined = text.replace("\\\n", " ");
    let mut img = Image {
        stages: 0,
        user: None,
        entrypoint: None,
        env: Vec::new(),
    };
    for line in joined.lines().map(str::trim) {
        let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
        match word {
            "FROM" => {
                img.stages += 1;
                img.user = None;
                img.entrypoint = None;
                img.env.clear();
            }
            "USER" => img.user = Some(rest.trim().to_owned()),
            "ENTRYPOINT" => {
                let v: Vec<String> =
                    serde_json::from_str(rest.trim()).expect("ENTRYPOINT in exec form");
                img.entrypoint = v.first().cloned();
            }
            "ENV" => img.env.extend(
                rest.split_whitespace()
                    .filter_map(|kv| kv.split_once('=').map(|(k, _)| k.to_owned())),
            ),
            _ => {}
        }
    }
    img
}

#[test]
fn the_compose_file_and_dockerfiles_match_the_binaries() {
    let path = root().join("docker/compose.yml");
    let text = std::fs::read_to_string(&path).expect("docker/compose.yml");
    let compose: Compose = serde_saphyr::from_str(&text).expect("compose.yml parses");
    let mut checked = 0;
    for (name, svc) in &compose.services {
        let Some(build) = &svc.build else {
            assert!(svc.image.is_some(), "{name}: neither image nor build");
            continue;
        };
        assert_eq!(
            build.context, "..",
            "{name}: builds from the repository root"
        );
        let img = read_dockerfile(&root().join(&build.dockerfile));
        assert!(
            img.stages >= 2,
            "{name}: {} is multi-stage",
            build.dockerfile
        );
        let user = img.user.clone().unwrap_or_default();
        assert!(
            !user.is_empty() && user != "root" && user != "0",
            "{name}: runs as non-root, not {user:?}"
        );
        let program = svc
            .entrypoint
            .as_ref()
            .and_then(|e| e.first().cloned())
            .or(img.entrypoint.clone())
            .unwrap_or_else(|| panic!("{name}: no entrypoint"));
        let binary = Path::new(&program)
            .file_name()
            .and_then(|f| f.to_str())
            .expect("program name")
            .to_owned();
        let exe = bin(&binary);
        let args = svc.command.clone().unwrap_or_default();
        let out = Command::new(&exe)
            .args(&args)
            .arg("--help")
            .env_clear()
            .output()
            .expect("run");
        let help = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "{name}: {binary} refuses {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let flat: String = help.split_whitespace().collect();
        // The image's ENV is meant for its own entrypoint.
        let image_env = if svc.entrypoint.is_some() {
            &[][..]
        } else {
            &img.env[..]
        };
        for key in svc.environment.keys().chain(image_env.iter()) {
            assert!(
                flat.contains(&format!("[env:{key}=")) || flat.contains(&format!("[env:{key}]")),
                "{name}: {binary} has no environment variable {key}"
            );
        }
        checked += 1;
    }
    assert!(
        checked >= 6,
        "only {checked} services built from this repository"
    );
}
