//! Builds the power-cut layer (`powercut.c`) and plays its undo logs back
//! after a SIGKILL, so the spool's files hold only what was synced.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use rand::rngs::StdRng;
use rand::Rng;

/// Compiles the layer with `cc` into `dir`; returns the shared object.
pub fn build(dir: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/faults/powercut.c");
    let so = dir.join("powercut.so");
    let out = Command::new("cc")
        .args(["-shared", "-fPIC", "-O1", "-Wall", "-Werror", "-o"])
        .arg(&so)
        .arg(&src)
        .arg("-ldl")
        .output()
        .expect("run cc (the power-cut layer needs a C compiler)");
    assert!(
        out.status.success(),
        "cc {}: {}",
        src.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    so
}

/// The daemon's environment for the layer over `spool`, logs in `logs`.
pub fn env(so: &Path, spool: &Path, logs: &Path, sync_disabled: bool) -> Vec<(String, String)> {
    let mut e = vec![
        ("LD_PRELOAD".to_string(), so.display().to_string()),
        ("POWERCUT_FILE".to_string(), spool.display().to_string()),
        ("POWERCUT_LOG".to_string(), logs.display().to_string()),
    ];
    if sync_disabled {
        e.push(("POWERCUT_NOSYNC".to_string(), "1".to_string()));
    }
    e
}

struct Record {
    seq: u64,
    off: u64,
    write_len: u64,
    orig: Vec<u8>,
}

struct UndoLog {
    target: PathBuf,
    orig_size: u64,
    records: Vec<Record>,
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// Parses one undo log. A record cut short by the kill (the layer writes a
/// record before its write) is dropped: its write never started.
fn parse(log: &Path, target: PathBuf) -> Option<UndoLog> {
    let b = std::fs::read(log).expect("read an undo log");
    if b.len() < 12 || &b[..4] != b"PCUT" {
        return None;
    }
    let orig_size = u64_at(&b, 4)?;
    let mut records = Vec::new();
    let mut at = 12;
    while let (Some(seq), Some(off), Some(write_len), Some(n)) = (
        u64_at(&b, at),
        u64_at(&b, at + 8),
        u64_at(&b, at + 16),
        u64_at(&b, at + 24),
    ) {
        let start = at + 32;
        let Some(orig) = b.get(start..start + n as usize) else {
            break;
        };
        records.push(Record {
            seq,
            off,
            write_len,
            orig: orig.to_vec(),
        });
        at = start + n as usize;
    }
    Some(UndoLog {
        target,
        orig_size,
        records,
    })
}

/// A 512-byte sector (or the part of one a write covered): offset, bytes.
type Sector = (u64, Vec<u8>);

/// What a power cut did: unsynced writes reverted, sectors kept (torn).
#[derive(Debug, Default)]
pub struct Cut {
    pub reverted_writes: usize,
    pub reverted_bytes: u64,
    pub torn_sectors_kept: usize,
}

/// Takes every watched file back to its state at its last sync, then
/// deletes the logs and the -shm (memory, gone after a reboot). With
/// `torn`, some 512-byte sectors of the very last unsynced write survive
/// (written before the power went), the rest of it is lost.
pub fn cut(spool: &Path, logs: &Path, torn: Option<&mut StdRng>) -> Cut {
    let dir = spool.parent().expect("spool has a directory");
    let mut undo = Vec::new();
    for e in std::fs::read_dir(logs).expect("read the undo dir") {
        let p = e.expect("undo dir entry").path();
        let Some(name) = p.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let Some(base) = name.strip_suffix(".undo") else {
            continue;
        };
        let target = dir.join(base);
        if target.exists() {
            if let Some(u) = parse(&p, target) {
                undo.push(u);
            }
        }
        std::fs::remove_file(&p).expect("remove an undo log");
    }
    // The torn write: the last one of all, and which of its sectors made it
    // to the disk, read before anything is reverted.
    let mut kept: Option<(PathBuf, Vec<Sector>)> = None;
    if let Some(rng) = torn {
        let last = undo
            .iter()
            .flat_map(|u| u.records.iter().map(move |r| (u, r)))
            .filter(|(_, r)| r.write_len > 0)
            .max_by_key(|(_, r)| r.seq);
        if let Some((u, r)) = last {
            let f = std::fs::File::open(&u.target).expect("open a watched file");
            let size = f.metadata().expect("stat").len();
            let end = (r.off + r.write_len).min(size);
            let mut sectors = Vec::new();
            let mut s = r.off;
            while s < end {
                let n = (512 - s % 512).min(end - s);
                if rng.gen_bool(0.5) {
                    let mut buf = vec![0; n as usize];
                    f.read_exact_at(&mut buf, s).expect("read a sector");
                    sectors.push((s, buf));
                }
                s += n;
            }
            kept = Some((u.target.clone(), sectors));
        }
    }
    let mut c = Cut::default();
    for u in &undo {
        let f = OpenOptions::new()
            .write(true)
            .open(&u.target)
            .expect("open a watched file");
        for r in u.records.iter().rev() {
            f.write_all_at(&r.orig, r.off).expect("revert a write");
            c.reverted_writes += 1;
            c.reverted_bytes += r.write_len;
        }
        f.set_len(u.orig_size).expect("revert the size");
        f.sync_all().expect("sync the reverted file");
    }
    if let Some((target, sectors)) = kept {
        let f = OpenOptions::new()
            .write(true)
            .open(&target)
            .expect("open the torn file");
        for (at, buf) in &sectors {
            let len = f.metadata().expect("stat").len();
            if at + buf.len() as u64 > len {
                // Blocks the file grew by read as zeros up to the kept sector.
                f.set_len(at + buf.len() as u64).expect("extend");
            }
            f.write_all_at(buf, *at).expect("keep a torn sector");
        }
        c.torn_sectors_kept = sectors.len();
    }
    let shm = PathBuf::from(format!("{}-shm", spool.display()));
    let _ = std::fs::remove_file(shm);
    c
}
