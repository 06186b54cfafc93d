//! A zip of a million empty entries is refused from its last bytes, in bounded memory: the hub
//! never loads its central directory. (Alone in its test binary: the peak memory of the
//! children this process waited for is this test's `snodo import`.)

mod common;
use common::*;
use std::io::Write;

/// A real ZIP64 archive of `n` empty stored entries plus an empty `<stem>.csv`, written by hand:
/// `zip` would keep every entry in memory to write it.
fn many_entries_zip(dir: &std::path::Path, stem: &str, n: u32) -> std::path::PathBuf {
    let path = dir.join(format!("{stem}.zip"));
    let mut w = std::io::BufWriter::new(std::fs::File::create(&path).expect("zip"));
    let names: Vec<String> = (0..n)
        .map(|i| format!("e{i:07}"))
        .chain([format!("{stem}.csv")])
        .collect();
    let mut offsets = Vec::with_capacity(names.len());
    let mut at = 0u64;
    for name in &names {
        offsets.push(at);
        let mut h = Vec::with_capacity(30 + name.len());
        h.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
        h.extend_from_slice(&20u16.to_le_bytes()); // version needed
        h.extend_from_slice(&[0; 4]); // flags, method: stored
        h.extend_from_slice(&[0, 0, 0x21, 0]); // time, date: 1980-01-01
        h.extend_from_slice(&[0; 12]); // crc, sizes: empty
        h.extend_from_slice(&(name.len() as u16).to_le_bytes());
        h.extend_from_slice(&0u16.to_le_bytes());
        h.extend_from_slice(name.as_bytes());
        w.write_all(&h).expect("write");
        at += h.len() as u64;
    }
    let cd_start = at;
    for (name, offset) in names.iter().zip(&offsets) {
        let mut h = Vec::with_capacity(46 + name.len());
        h.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
        h.extend_from_slice(&20u16.to_le_bytes()); // made by
        h.extend_from_slice(&20u16.to_le_bytes()); // needed
        h.extend_from_slice(&[0; 4]);
        h.extend_from_slice(&[0, 0, 0x21, 0]);
        h.extend_from_slice(&[0; 12]);
        h.extend_from_slice(&(name.len() as u16).to_le_bytes());
        h.extend_from_slice(&[0; 12]); // extra, comment, disk, attributes
        h.extend_from_slice(&(*offset as u32).to_le_bytes());
        h.extend_from_slice(name.as_bytes());
        w.write_all(&h).expect("write");
        at += h.len() as u64;
    }
    let (count, cd_size) = (names.len() as u64, at - cd_start);
    let eocd64 = at;
    let mut t = Vec::new();
    t.extend_from_slice(&0x0606_4b50u32.to_le_bytes());
    t.extend_from_slice(&44u64.to_le_bytes());
    t.extend_from_slice(&45u16.to_le_bytes());
    t.extend_from_slice(&45u16.to_le_bytes());
    t.extend_from_slice(&[0; 8]);
    t.extend_from_slice(&count.to_le_bytes());
    t.extend_from_slice(&count.to_le_bytes());
    t.extend_from_slice(&cd_size.to_le_bytes());
    t.extend_from_slice(&cd_start.to_le_bytes());
    t.extend_from_slice(&0x0706_4b50u32.to_le_bytes());
    t.extend_from_slice(&0u32.to_le_bytes());
    t.extend_from_slice(&eocd64.to_le_bytes());
    t.extend_from_slice(&1u32.to_le_bytes());
    t.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    t.extend_from_slice(&[0; 4]);
    t.extend_from_slice(&[0xff; 4]); // entries: see the ZIP64 record
    t.extend_from_slice(&(cd_size as u32).to_le_bytes());
    t.extend_from_slice(&(cd_start as u32).to_le_bytes());
    t.extend_from_slice(&0u16.to_le_bytes());
    w.write_all(&t).expect("write");
    w.flush().expect("flush");
    path
}

/// The largest resident set of the children waited for so far, in KiB.
fn children_peak_kib() -> i64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct it is given.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, usage.as_mut_ptr()) };
    assert_eq!(rc, 0);
    // SAFETY: filled above.
    unsafe { usage.assume_init() }.ru_maxrss
}

#[test]
fn a_zip_of_a_million_empty_entries_is_refused_in_bounded_memory() {
    let home = Home::new();
    // What the generator writes is sound ZIP64: the zip crate itself reads it (shown on a
    // smaller one, still past the 65535 entries of a classic zip).
    let sample = many_entries_zip(home.path(), "c_g224-SAMPLE-1_4", 70_000);
    let entries = zip::ZipArchive::new(std::fs::File::open(&sample).expect("zip"))
        .expect("a valid zip")
        .len();
    assert_eq!(entries, 70_001);
    let zip = many_entries_zip(home.path(), "c_g224-MANY1-1_4", 1_000_000);

    let o = home.import(&zip, &home.path().join("out"));
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("PAA_IMPORT_ERROR"), "{err}");
    assert!(
        err.contains("1000001 entries, more than the limit of 1000"),
        "{err}"
    );
    let peak_mib = children_peak_kib() / 1024;
    // Loading the directory takes hundreds of MB; the hub stays near its idle size.
    assert!(peak_mib < 100, "snodo import peaked at {peak_mib} MiB");
    assert!(home.positions(&[]).is_empty());
}
