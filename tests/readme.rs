//! The README's headline is what `deep-coral report` computes from the committed runs: the
//! block between `<!-- headline: results/<experiment>/headline.md -->` and `<!-- /headline -->`
//! must equal the headline.md that `report` writes for the experiment's committed run folders
//! (copied to a temporary folder, so that runs still in progress beside them do not count).

mod common;

use std::path::Path;
use std::process::Command;

use common::{bin, root, run_ok};

/// The headline block of README.md: the experiment folder it names and its text.
fn readme_headline() -> (String, String) {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let begin = "<!-- headline: ";
    let start = readme.find(begin).expect("README.md has no `<!-- headline: ... -->` block");
    let rest = &readme[start + begin.len()..];
    let (file, rest) = rest.split_once(" -->\n").expect("the headline marker ends with ` -->`");
    let (text, _) = rest.split_once("<!-- /headline -->").expect("README.md has no `<!-- /headline -->`");
    let experiment = file.strip_suffix("/headline.md").expect("the marker names <experiment>/headline.md");
    (experiment.to_string(), text.to_string())
}

/// The files of `dir` that git tracks, relative to the repository root.
fn committed_files(dir: &str) -> Vec<String> {
    let out = run_ok(Command::new("git").current_dir(root()).args(["ls-files", "-z", "--", dir]));
    String::from_utf8(out.stdout).unwrap().split('\0').filter(|s| !s.is_empty()).map(str::to_owned).collect()
}

#[test]
fn readme_headline_is_what_report_computes_from_the_committed_runs() {
    let (experiment, in_readme) = readme_headline();
    let files = committed_files(&experiment);
    assert!(
        files.iter().any(|f| f.ends_with("/metrics.csv")),
        "no committed run of {experiment}: the README's headline has nothing under it"
    );
    let tmp = tempfile::tempdir().unwrap();
    // Same folder name: the headline's title is the experiment folder's name.
    for f in &files {
        let to = tmp.path().join(f);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(root().join(f), &to).unwrap();
    }
    let copy = tmp.path().join(&experiment);
    // Paths in spec.json (the paper's table) are relative to the repository root.
    run_ok(bin().current_dir(root()).arg("report").arg(&copy));
    let computed = std::fs::read_to_string(copy.join("headline.md")).unwrap();
    assert!(
        in_readme == computed,
        "README.md's headline is not what `deep-coral report` computes from the committed runs of \
         {experiment}: run `make readme` (report, then scripts/readme_headline.sh)\n--- README ---\n{in_readme}\n--- report ---\n{computed}"
    );
    // And it is what the committed headline.md says.
    let committed = Path::new(&experiment).join("headline.md");
    assert_eq!(std::fs::read_to_string(root().join(&committed)).unwrap(), computed, "{} is stale", committed.display());
}
