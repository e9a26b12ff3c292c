use super::*;

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("warren-files-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn open_files_stay_within_the_limit_and_reopen_on_demand() {
    let tmp = TempDir::new("limit");
    let files = Files::unswept(16);
    let handles: Vec<_> = (0..100u64)
        .map(|i| {
            let handle = files.handle(tmp.0.join(format!("f{i}")), Mode::Write);
            handle.write_all_at(&i.to_be_bytes(), 0).unwrap();
            assert!(files.open() <= files.limit(), "{} open", files.open());
            handle
        })
        .collect();
    for (i, handle) in handles.iter().enumerate() {
        handle.sync().unwrap();
        let mut buf = [0; 8];
        std::fs::File::open(tmp.0.join(format!("f{i}")))
            .unwrap()
            .read_exact_at(&mut buf, 0)
            .unwrap();
        assert_eq!(u64::from_be_bytes(buf), i as u64);
    }
    assert!(files.open() <= files.limit());
    drop(handles);
    assert_eq!(files.open(), 0);
}

#[test]
fn a_busy_handle_survives_sweeps_and_an_idle_one_is_closed() {
    let tmp = TempDir::new("sweep");
    let files = Files::unswept(64);
    let busy = files.create_new(tmp.0.join("busy")).unwrap();
    let idle = files.create_new(tmp.0.join("idle")).unwrap();
    idle.write_all_at(b"idle", 0).unwrap();
    assert_eq!(files.open(), 2);
    for i in 0..3 {
        busy.write_all_at(b"busy", i * 4).unwrap();
        files.sweep();
    }
    assert_eq!(
        files.open(),
        1,
        "the idle file is closed, the busy one kept"
    );
    // Closing synced the idle file's write: nothing left for the group commit, no reopen.
    idle.sync().unwrap();
    assert_eq!(files.open(), 1);
    let mut buf = [0; 4];
    idle.read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(&buf, b"idle");
    assert_eq!(files.open(), 2);
    files.sweep();
    files.sweep();
    assert_eq!(files.open(), 0);
}

#[test]
fn a_removed_directory_syncs_as_nothing_to_do() {
    let tmp = TempDir::new("dir");
    let files = Files::unswept(16);
    let dir = tmp.0.join("gone");
    std::fs::create_dir_all(&dir).unwrap();
    let handle = files.handle(dir.clone(), Mode::Directory);
    handle.mark_dirty();
    std::fs::remove_dir_all(&dir).unwrap();
    handle.sync().unwrap();
    // A missing regular file is an error, though.
    let missing = files.handle(tmp.0.join("missing"), Mode::ReadWrite);
    assert!(missing.read_exact_at(&mut [0; 1], 0).is_err());
}

#[test]
fn out_of_descriptors_is_said_in_words() {
    let files = Files::unswept(16);
    let e = files.describe(io::Error::from_raw_os_error(libc::EMFILE));
    let text = e.to_string();
    assert!(text.contains("out of file descriptors"), "{text}");
    assert!(text.contains("limit"), "{text}");
    let other = files.describe(io::Error::from_raw_os_error(libc::ENOENT));
    assert_eq!(other.raw_os_error(), Some(libc::ENOENT));
}
