//! `make demo`, smaller: the whole system end to end, as the demo binary drives it.

#[test]
fn the_demo_passes_with_a_small_file() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_demo"))
        .args(["--size-mib", "24"])
        .output()
        .expect("run the demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed:\n{stdout}\n{stderr}");
    for step in [
        "paired",
        "bob downloaded data.bin from one seeder",
        "killed tracker 2",
        "carol downloaded data.bin from two seeders",
        "without logging in again",
        "bob's copy verified",
        "carol's copy verified",
    ] {
        assert!(stdout.contains(step), "missing '{step}' in:\n{stdout}");
    }
}
