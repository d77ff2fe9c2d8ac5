//! Crash consistency inside database transactions: every store operation
//! killed (SIGKILL) inside each of its write transactions, before and after
//! the commit, through the `STRATA_TEST_KILL_IN_TX` hook; after every kill
//! `check` is clean and nothing is left over. Every backend; overlay2 and
//! btrfs as root (under CI=true they must run).

// Tests inspect scratch directories by path, as a user would.
#![allow(clippy::disallowed_methods)]
#![allow(clippy::unwrap_used)]

mod common;

use common::*;

/// One store operation of the transaction-kill harness: what to set up
/// first, the command, and what to undo so that the next run sees the same
/// transactions again.
struct TxOp {
    name: &'static str,
    setup: &'static [&'static [&'static str]],
    run: &'static [&'static str],
    undo: &'static [&'static [&'static str]],
}

const TX_OPS: &[TxOp] = &[
    TxOp {
        name: "image load",
        setup: &[],
        run: &["image", "load", "-i", "LAYOUT", "--tag", "k:1"],
        undo: &[&["image", "rm", "-f", "k:1"]],
    },
    TxOp {
        name: "container create",
        setup: &[],
        run: &["container", "create", "kc", "strata/hello"],
        undo: &[&["container", "rm", "-f", "kc"]],
    },
    TxOp {
        name: "container commit",
        setup: &[],
        run: &["container", "commit", "cc", "k:2"],
        undo: &[&["image", "rm", "-f", "k:2"]],
    },
    TxOp {
        name: "container commit --rm",
        setup: &[&["container", "create", "kc2", "strata/hello"]],
        run: &["container", "commit", "--rm", "kc2", "k:3"],
        undo: &[
            &["container", "rm", "-f", "kc2"],
            &["image", "rm", "-f", "k:3"],
        ],
    },
    TxOp {
        name: "container rm",
        setup: &[&["container", "create", "kc3", "strata/hello"]],
        run: &["container", "rm", "kc3"],
        undo: &[&["container", "rm", "-f", "kc3"]],
    },
    TxOp {
        name: "image rm",
        setup: &[&["image", "load", "-i", "LAYOUT", "--tag", "k:4"]],
        run: &["image", "rm", "k:4"],
        undo: &[&["image", "rm", "-f", "k:4"]],
    },
    TxOp {
        name: "container prune",
        setup: &[&["container", "create", "kc4", "strata/hello"]],
        run: &["container", "prune", "-f"],
        undo: &[&["container", "rm", "-f", "kc4"]],
    },
];

/// Kill every store operation inside each of its database transactions in
/// turn (`STRATA_TEST_KILL_IN_TX`: after the statements and before the
/// commit, then right after the commit); after every kill `check` is clean
/// and nothing is left over, and the next run of the operation succeeds.
fn kill_in_transactions(driver: &'static str) {
    if unavailable(driver).is_some() {
        return;
    }
    let e = Env::new(driver);
    let work = e.another_root();
    let layout = work.join("layout");
    make_big_layout(&layout);
    e.ok(&["image", "load", "-i", EXAMPLE]);
    e.ok(&["container", "create", "cc", "strata/hello"]);
    let subst = |a: &[&str]| -> Vec<String> {
        a.iter()
            .map(|w| match *w {
                "LAYOUT" => layout.display().to_string(),
                w => w.to_string(),
            })
            .collect()
    };
    let mut kills = 0;
    for op in TX_OPS {
        let mut txs = 0;
        'points: for n in 1..100 {
            for phase in ["", ":after"] {
                for s in op.setup {
                    let a = subst(s);
                    e.ok(&a.iter().map(String::as_str).collect::<Vec<_>>());
                }
                let a = subst(op.run);
                let out = e
                    .cmd_in(&e.root, &a.iter().map(String::as_str).collect::<Vec<_>>())
                    .env("STRATA_TEST_KILL_IN_TX", format!("{n}{phase}"))
                    .output()
                    .unwrap();
                let killed = std::os::unix::process::ExitStatusExt::signal(&out.status) == Some(9);
                if !killed {
                    assert!(
                        out.status.success(),
                        "{driver}: `{}` failed: {}",
                        op.name,
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
                let c = e.run_in(&e.root, &["check"]);
                assert!(
                    c.status.success(),
                    "{driver}: check after killing `{}` in transaction {n}{phase} failed:\n{}{}",
                    op.name,
                    String::from_utf8_lossy(&c.stdout),
                    String::from_utf8_lossy(&c.stderr)
                );
                assert_no_leftovers(&e, driver);
                for u in op.undo {
                    let a = subst(u);
                    let _ = e.run_in(&e.root, &a.iter().map(String::as_str).collect::<Vec<_>>());
                }
                if !killed {
                    break 'points;
                }
                kills += 1;
                txs = n;
            }
        }
        assert!(
            txs > 0,
            "{driver}: `{}` was never killed inside a transaction",
            op.name
        );
        eprintln!(
            "{driver}: `{}`: killed inside each of its {txs} write transactions, before and after commit",
            op.name
        );
    }
    assert!(e.ok(&["check"]).contains("consistent"));
    e.ok(&[
        "image",
        "load",
        "-i",
        layout.to_str().unwrap(),
        "--tag",
        "final:1",
    ]);
    eprintln!("{driver}: {kills} kills inside database transactions, check clean after each");
}

#[test]
fn kill_in_transactions_vfs() {
    kill_in_transactions("vfs");
}

#[test]
fn kill_in_transactions_overlay2() {
    kill_in_transactions("overlay2");
}

#[test]
fn kill_in_transactions_btrfs() {
    kill_in_transactions("btrfs");
}
