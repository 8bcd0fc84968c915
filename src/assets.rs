//! `saltgate assets DIR` (hidden): man pages and shell completions generated from the CLI
//! definition itself, so they cannot drift from it. `scripts/package` ships them.

use std::path::Path;

use anyhow::Context;
use clap_complete::Shell;

/// Writes `DIR/man/saltgate*.1` (one page per subcommand) and `DIR/completions/` (bash, zsh,
/// fish).
pub(crate) fn write(cmd: clap::Command, dir: &Path) -> anyhow::Result<()> {
    let man = dir.join("man");
    std::fs::create_dir_all(&man).with_context(|| format!("creating {}", man.display()))?;
    clap_mangen::generate_to(cmd.clone(), &man)
        .with_context(|| format!("writing man pages to {}", man.display()))?;
    let completions = dir.join("completions");
    std::fs::create_dir_all(&completions)
        .with_context(|| format!("creating {}", completions.display()))?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let mut cmd = cmd.clone();
        clap_complete::generate_to(shell, &mut cmd, "saltgate", &completions)
            .with_context(|| format!("writing {shell} completions"))?;
    }
    Ok(())
}
