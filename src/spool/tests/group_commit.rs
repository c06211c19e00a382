//! Group commit: batching, duplicates inside a batch, failed commits.

use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::task::Poll;
use std::time::{Duration, Instant};

use super::*;
use crate::spool::{Admin, Enqueued, ListFilter, SpoolError};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_enqueues_share_commits_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let commits = Commits::default();
    let mut opts = options(dir.path(), "a");
    opts.on_commit = Some(commits.observer());
    let spool = Spool::open(opts).unwrap();
    let tasks: Vec<_> = (0..200u32)
        .map(|n| {
            let spool = spool.clone();
            tokio::spawn(async move {
                let body = format!("body-{n}");
                let dedup = format!("d-{n}");
                let res = spool
                    .enqueue(item("h", Some(&dedup), body.as_bytes()))
                    .await;
                (n, res.unwrap())
            })
        })
        .collect();
    let mut ids = Vec::new();
    for task in tasks {
        let (n, res) = task.await.unwrap();
        let Enqueued::New(id) = res else {
            panic!("item {n}: {res:?}")
        };
        ids.push((n, id));
    }
    spool.close().await;

    let counts = commits.counts();
    // Opening registers outside the writer: every observed command is ours.
    assert_eq!(counts.iter().sum::<usize>(), 200);
    assert!(
        counts.len() < 200,
        "expected batching, got {} commits for 200 items",
        counts.len()
    );
    println!(
        "200 concurrent enqueues in {} commits (largest {})",
        counts.len(),
        counts.iter().max().unwrap()
    );

    let admin = Admin::open(spool_path(dir.path())).unwrap();
    assert_eq!(admin.ls(&ListFilter::default()).unwrap().len(), 200);
    for (n, id) in ids {
        let got = admin.show(id).unwrap();
        assert_eq!(&got.body[..], format!("body-{n}").as_bytes());
        assert_eq!(got.dedup_id, Some(format!("d-{n}")));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_duplicates_in_one_batch_write_one_item() {
    let dir = tempfile::tempdir().unwrap();
    let commits = Commits::default();
    let record = commits.observer();
    // The first commit's observer parks the writer until we say go, so the
    // two duplicates queue up behind it and land in the same batch.
    let (entered_tx, entered_rx) = mpsc::channel::<()>();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let (entered_tx, go_rx) = (Mutex::new(entered_tx), Mutex::new(go_rx));
    let parked = AtomicBool::new(false);
    let mut opts = options(dir.path(), "a");
    opts.on_commit = Some(Arc::new(move |latency, count| {
        record(latency, count);
        if !parked.swap(true, Ordering::SeqCst) {
            entered_tx.lock().unwrap().send(()).unwrap();
            go_rx
                .lock()
                .unwrap()
                .recv_timeout(Duration::from_secs(10))
                .unwrap();
        }
    }));
    let spool = Spool::open(opts).unwrap();

    let first = tokio::spawn({
        let spool = spool.clone();
        async move { spool.enqueue(item("h", None, b"first")).await }
    });
    tokio::task::spawn_blocking(move || entered_rx.recv_timeout(Duration::from_secs(10)))
        .await
        .unwrap()
        .expect("writer reached the first commit");

    let mut dup1 = Box::pin(spool.enqueue(item("h", Some("same"), b"one")));
    let mut dup2 = Box::pin(spool.enqueue(item("h", Some("same"), b"two")));
    // One poll each sends the command; the writer is parked, so both wait.
    std::future::poll_fn(|cx| {
        assert!(dup1.as_mut().poll(cx).is_pending());
        assert!(dup2.as_mut().poll(cx).is_pending());
        Poll::Ready(())
    })
    .await;
    go_tx.send(()).unwrap();

    assert!(matches!(first.await.unwrap(), Ok(Enqueued::New(_))));
    let one = dup1.await.unwrap();
    let two = dup2.await.unwrap();
    let Enqueued::New(id) = one else {
        panic!("first of the pair must be new: {one:?}")
    };
    assert_eq!(two, Enqueued::Duplicate(id));
    assert_eq!(commits.counts(), [1, 2]);
    spool.close().await;

    let admin = Admin::open(spool_path(dir.path())).unwrap();
    let all = admin.ls(&ListFilter::default()).unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(&admin.show(id).unwrap().body[..], b"one");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throughput_with_1k_bodies() {
    // Prints a rate; asserts only correctness (speed depends on the disk).
    let dir = tempfile::tempdir().unwrap();
    let commits = Commits::default();
    let mut opts = options(dir.path(), "bench");
    opts.on_commit = Some(commits.observer());
    let spool = Spool::open(opts).unwrap();
    let body = vec![b'x'; 1024];
    let (clients, per_client) = (256usize, 80usize);
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let spool = spool.clone();
            let body = body.clone();
            tokio::spawn(async move {
                for _ in 0..per_client {
                    spool.enqueue(item("bench", None, &body)).await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let elapsed = started.elapsed();
    spool.close().await;
    let total = clients * per_client;
    let counts = commits.counts();
    let mut latencies = commits.latencies();
    latencies.sort();
    let busy: Duration = latencies.iter().sum();
    println!(
        "spool throughput: {total} enqueues of 1 KiB in {elapsed:.2?} = {:.0} items/s, \
         {} commits, mean batch {:.1}, commit latency median {:.2?} max {:.2?}, \
         writer in transactions {:.0}% of the time",
        total as f64 / elapsed.as_secs_f64(),
        counts.len(),
        total as f64 / counts.len() as f64,
        latencies[latencies.len() / 2],
        latencies[latencies.len() - 1],
        100.0 * busy.as_secs_f64() / elapsed.as_secs_f64(),
    );
    assert_eq!(counts.iter().sum::<usize>(), total);
}

const CHILD_DIR_ENV: &str = "HOOKD_SPOOL_TEST_FAILING_DISK_DIR";
const FAILING: usize = 20;

/// Runs itself in a child process whose file-size limit (RLIMIT_FSIZE) stops
/// the WAL from growing: the write at commit fails with EFBIG, as on a full
/// disk. The limit is per process, hence the child.
#[test]
fn commit_failure_reaches_every_waiter() {
    if let Ok(dir) = std::env::var(CHILD_DIR_ENV) {
        return fail_commits_in_child(Path::new(&dir));
    }
    let dir = tempfile::tempdir().unwrap();
    let (_, path_in_crate) = module_path!().split_once("::").unwrap();
    let name = format!("{path_in_crate}::commit_failure_reaches_every_waiter");
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([name.as_str(), "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR_ENV, dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed:\n{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!("child: {FAILING} enqueues failed")),
        "child did not run the scenario:\n{stdout}"
    );
    if let Some(at) = stdout.find("child:") {
        println!("{}", stdout[at..].lines().next().unwrap_or_default());
    }
    // Only the items committed before and after the limit exist.
    let admin = Admin::open(spool_path(dir.path())).unwrap();
    let bodies: Vec<Vec<u8>> = admin
        .ls(&ListFilter::default())
        .unwrap()
        .iter()
        .map(|s| admin.show(s.id).unwrap().body.to_vec())
        .collect();
    assert_eq!(bodies, [b"before".to_vec(), b"after".to_vec()]);
}

fn set_file_size_limit(bytes: libc::rlim_t) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain libc calls on a local struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_FSIZE, &mut lim), 0);
        lim.rlim_cur = bytes.min(lim.rlim_max);
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &lim), 0);
    }
}

fn fail_commits_in_child(dir: &Path) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let commits = Commits::default();
        let mut opts = options(dir, "child");
        opts.on_commit = Some(commits.observer());
        let spool = Spool::open(opts).unwrap();
        spool.enqueue(item("h", None, b"before")).await.unwrap();
        let committed = commits.counts().len();

        let mut wal = std::ffi::OsString::from(spool.describe());
        wal.push("-wal");
        let wal_len = std::fs::metadata(&wal).unwrap().len();
        // SAFETY: ignoring SIGXFSZ makes the over-limit write return EFBIG.
        unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
        set_file_size_limit(wal_len as libc::rlim_t);

        let body = vec![b'z'; 8192];
        let tasks: Vec<_> = (0..FAILING)
            .map(|_| {
                let spool = spool.clone();
                let body = body.clone();
                tokio::spawn(async move { spool.enqueue(item("h", None, &body)).await })
            })
            .collect();
        let mut errors = Vec::new();
        for task in tasks {
            match task.await.unwrap() {
                Err(e) => errors.push(e),
                Ok(got) => panic!("enqueue succeeded past the size limit: {got:?}"),
            }
        }
        // No failed batch was reported as committed.
        assert_eq!(commits.counts().len(), committed);
        for e in &errors {
            // The SQLite cause (and its code) reaches every waiter.
            let cause = match e {
                SpoolError::CommitFailed(cause) => cause.as_ref(),
                other => other,
            };
            assert!(
                matches!(cause, SpoolError::Sqlite(_)),
                "unexpected error {e}"
            );
        }

        // The disk "has room" again: the same spool keeps working.
        set_file_size_limit(libc::RLIM_INFINITY);
        spool.enqueue(item("h", None, b"after")).await.unwrap();
        spool.close().await;
        println!(
            "child: {} enqueues failed, first error: {}",
            errors.len(),
            errors[0]
        );
    });
}
