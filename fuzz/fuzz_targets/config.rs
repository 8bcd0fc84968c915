//! Config loading (src/config): the master file with its `include`/`default_include` files,
//! the `rest_cherrypy:` and `saltgate:` blocks, hook rules with their verifiers, validation,
//! and the effective-config rendering of `saltgate check-config`.
//!
//! Input: the master file's text. A line `#--- <name>` starts another file `master.d/<name>`
//! (the default include pattern is `master.d/*.conf`). The files are written to a private
//! temporary directory, which also holds `github.secret` and `travis.pub` for rules to name;
//! the environment passed in has `HOOK_SECRET`.
#![no_main]

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use saltgate::config::{Config, render_effective};
use saltgate_fuzz::fixtures;

struct Dir {
    root: PathBuf,
    env: HashMap<String, String>,
}

fn dir() -> &'static Dir {
    static DIR: OnceLock<Dir> = OnceLock::new();
    DIR.get_or_init(|| {
        let root =
            std::env::temp_dir().join(format!("saltgate-fuzz-config-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("master.d")).expect("temp dir");
        std::fs::write(root.join("github.secret"), "fuzz-secret\n").expect("secret");
        std::fs::write(root.join("travis.pub"), fixtures::TRAVIS_PUB).expect("key");
        let env = HashMap::from([("HOOK_SECRET".to_owned(), "fuzz-env-secret".to_owned())]);
        Dir { root, env }
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let d = dir();
    let included = d.root.join("master.d");
    if let Ok(entries) = std::fs::read_dir(&included) {
        for e in entries.flatten() {
            let _ = std::fs::remove_file(e.path());
        }
    }
    let mut files: Vec<(String, String)> = vec![("master".into(), String::new())];
    for line in text.split_inclusive('\n') {
        if let Some(name) = line.strip_prefix("#--- ") {
            let name: String = name
                .trim()
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '.' || *c == '_')
                .take(32)
                .collect();
            files.push((
                format!(
                    "master.d/{}",
                    if name.is_empty() { "x.conf" } else { &name }
                ),
                String::new(),
            ));
        } else if let Some(last) = files.last_mut() {
            last.1.push_str(line);
        }
    }
    for (name, body) in files.iter().take(8) {
        let _ = std::fs::write(d.root.join(name), body);
    }
    match Config::load(&d.root, &d.env) {
        Ok(config) => {
            let _ = render_effective(&config);
            let _ = saltgate::config::warnings(&config);
            let _ = saltgate::config::notes(&config);
            let _ = config.master.bus_endpoints();
            let _ = config.master.ret_endpoint();
            let _ = config.pull_framing();
            let _ = config.plaintext_allowed();
            let _ = config.header_timeout();
            for rule in &config.hooks {
                let _ = rule.covers("github/deploy");
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
