//! A real ext4 on a loop device, for disk-full and read-only faults (a
//! tmpfs has neither real syncs nor real ENOSPC paths). Needs root for the
//! mount; without root the scenario says so and is skipped. Unmounted in Drop.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

pub struct LoopFs {
    _dir: tempfile::TempDir,
    img: PathBuf,
    pub mnt: PathBuf,
    mounted: bool,
}

fn run(cmd: &str, args: &[&str]) -> std::process::Output {
    Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd} (install it for the fault campaign): {e}"))
}

fn ok(cmd: &str, args: &[&str]) {
    let out = run(cmd, args);
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl LoopFs {
    /// A 64 MiB ext4 (no reserved blocks: hookd runs as root here and would
    /// otherwise write into them) mounted with errors=remount-ro.
    pub fn mount_or_skip(scenario: &str) -> Option<LoopFs> {
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            println!("[{scenario}] skipped: a loop mount needs root (CI runs as root)");
            return None;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let img = dir.path().join("ext4.img");
        std::fs::File::create(&img)
            .and_then(|f| f.set_len(64 << 20))
            .expect("create the image");
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).expect("mount point");
        let img_s = img.display().to_string();
        ok("mkfs.ext4", &["-q", "-F", "-m", "0", &img_s]);
        let mut fs = LoopFs {
            _dir: dir,
            img,
            mnt,
            mounted: false,
        };
        fs.mount();
        Some(fs)
    }

    fn mount(&mut self) {
        let (img, mnt) = (
            self.img.display().to_string(),
            self.mnt.display().to_string(),
        );
        ok("mount", &["-o", "loop,errors=remount-ro", &img, &mnt]);
        self.mounted = true;
    }

    /// Fills the file system with one file; returns it (delete it to free).
    pub fn fill(&self) -> PathBuf {
        let path = self.mnt.join("filler");
        let mut f = std::fs::File::create(&path).expect("create the filler");
        let chunk = vec![0xa5u8; 1 << 20];
        let small = vec![0x5au8; 4096];
        // Bounded: the image is 64 MiB.
        for _ in 0..128 {
            if f.write_all(&chunk).is_err() {
                break;
            }
        }
        for _ in 0..1024 {
            if f.write_all(&small).is_err() {
                break;
            }
        }
        let _ = f.sync_all();
        path
    }

    fn device(&self) -> String {
        let out = run(
            "findmnt",
            &["-no", "SOURCE", &self.mnt.display().to_string()],
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Whether writes fail with EROFS (an error-triggered read-only ext4
    /// flips its superblock; the mount's own flags still say rw).
    fn is_read_only(&self) -> bool {
        let probe = self.mnt.join("probe");
        match std::fs::File::create(&probe) {
            Ok(_) => {
                let _ = std::fs::remove_file(&probe);
                false
            }
            Err(e) => e.raw_os_error() == Some(libc::EROFS),
        }
    }

    /// What production sees when ext4 finds an error: the kernel turns the
    /// mount read-only under the open files (`mount -o remount,ro` would
    /// refuse while hookd holds the spool open for writing).
    pub fn make_read_only(&mut self) {
        let dev = self.device();
        let name = Path::new(&dev)
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        std::fs::write(
            format!("/sys/fs/ext4/{name}/trigger_fs_error"),
            "fault campaign\n",
        )
        .expect("trigger an ext4 error");
        crate::common::wait_for(Duration::from_secs(10), "the mount to turn ro", || {
            self.is_read_only().then_some(())
        });
    }

    /// After an error: unmount, fsck, mount read-write again.
    pub fn repair_and_remount(&mut self) {
        self.unmount();
        let out = run("e2fsck", &["-fy", &self.img.display().to_string()]);
        if std::env::var("HOOKD_FAULT_DEBUG").is_ok() {
            println!("e2fsck: {}", String::from_utf8_lossy(&out.stdout));
        }
        // 0: clean, 1: errors corrected.
        assert!(
            matches!(out.status.code(), Some(0 | 1)),
            "e2fsck: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        self.mount();
    }

    fn unmount(&mut self) {
        if self.mounted {
            ok("umount", &[&self.mnt.display().to_string()]);
            self.mounted = false;
        }
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        if self.mounted {
            let mnt = self.mnt.display().to_string();
            if !run("umount", &[&mnt]).status.success() {
                // Something still holds it (a failed test's daemon): detach
                // now, the kernel finishes when the last file closes.
                let _ = run("umount", &["-l", &mnt]);
            }
        }
    }
}
