//! The package database readers: dpkg `status` and `status.d/` paragraphs, apk
//! `installed`, one rpm header blob, a whole `rpmdb.sqlite` (read from a directory image
//! by the inventory, as a scan does) and os-release. The first byte picks the reader.
//! Seeds: the inventory fixtures, and the header blobs of the fixture rpm database.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use defender_lite::image::Image;
use defender_lite::inventory::{self, OsRelease, fuzzing};
use libfuzzer_sys::fuzz_target;

const DPKG_STATUS: u8 = 0;
const DPKG_STATUS_D: u8 = 1;
const APK: u8 = 2;
const RPM_HEADER: u8 = 3;
const RPM_SQLITE: u8 = 4;
const OS_RELEASE: u8 = 5;
const READERS: u8 = 6;

fn seeds() -> Vec<fuzz::Seed> {
    let inv = "defender-lite/tests/fixtures/inventory";
    let seed = |reader: u8, name: &str, rel: &str| {
        let mut input = vec![reader];
        input.extend(fuzz::fixture(&format!("{inv}/{rel}")));
        (name.to_owned(), input)
    };
    let mut out = vec![
        seed(DPKG_STATUS, "dpkg-status", "debian/status"),
        seed(DPKG_STATUS_D, "dpkg-status.d-libc6", "distroless/libc6"),
        seed(DPKG_STATUS_D, "dpkg-status.d-tzdata", "distroless/tzdata"),
        seed(APK, "apk-installed", "alpine/installed"),
        seed(RPM_SQLITE, "rpmdb.sqlite", "rpm/rpmdb.sqlite"),
        seed(OS_RELEASE, "os-release-debian", "debian/os-release"),
        seed(OS_RELEASE, "os-release-alpine", "alpine/os-release"),
        seed(OS_RELEASE, "os-release-rhel", "rpm/os-release"),
    ];
    // The header blobs as rpm stored them (a copy: the fixture is in WAL mode).
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("rpmdb.sqlite");
    std::fs::write(&db, fuzz::fixture(&format!("{inv}/rpm/rpmdb.sqlite"))).unwrap();
    let conn = rusqlite::Connection::open(&db).unwrap();
    let mut statement = conn.prepare("SELECT hnum, blob FROM Packages").unwrap();
    let rows = statement
        .query_map([], |row| {
            Ok((row.get::<_, i64>(0)?, row.get::<_, Vec<u8>>(1)?))
        })
        .unwrap();
    for row in rows {
        let (hnum, blob) = row.unwrap();
        let mut input = vec![RPM_HEADER];
        input.extend(blob);
        out.push((format!("rpm-header-{hnum}"), input));
    }
    out
}

/// A directory image whose rpm database is each input.
fn rpm_root() -> &'static PathBuf {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let root = fuzz::scratch_dir();
        std::fs::create_dir_all(root.join("var/lib/rpm")).unwrap();
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(
            root.join("etc/os-release"),
            fuzz::fixture("defender-lite/tests/fixtures/inventory/rpm/os-release"),
        )
        .unwrap();
        root
    })
}

fuzz_target!(init: fuzz::seeds(seeds), |data: &[u8]| {
    let Some((&reader, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    match reader % READERS {
        DPKG_STATUS => drop(fuzzing::dpkg(&text, true)),
        DPKG_STATUS_D => drop(fuzzing::dpkg(&text, false)),
        APK => drop(fuzzing::apk(&text)),
        RPM_HEADER => drop(fuzzing::rpm_header(rest)),
        RPM_SQLITE => {
            let root = rpm_root();
            std::fs::write(root.join("var/lib/rpm/rpmdb.sqlite"), rest).expect("writing the input");
            if let Ok(image) = Image::open(root) {
                let _ = inventory::collect(&image);
            }
        }
        _ => {
            let os = OsRelease::parse(&text, "etc/os-release");
            let _ = (os.dpkg_ecosystem(), os.apk_ecosystem(), os.rpm_ecosystem());
        }
    }
});
