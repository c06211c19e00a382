#![no_main]

// A fresh spool per input, on tmpfs when there is one: fsync is then free,
// and the fuzzer runs operations instead of waiting on the disk.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let base = std::path::Path::new("/dev/shm");
    let dir = if base.is_dir() {
        tempfile::tempdir_in(base)
    } else {
        tempfile::tempdir()
    };
    let dir = dir.expect("a temporary directory");
    hookd::fuzz_api::spool_model(dir.path(), data);
});
