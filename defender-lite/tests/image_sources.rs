//! `Image` over a root filesystem directory, flat tars and `docker save` archives: the same
//! filesystem, presented six ways, must read the same; layers must apply in order with
//! whiteouts and opaque directories; nothing may lead outside the image root; hostile
//! archives hit caps, not memory.

// Test helpers unwrap too: a panic is the failure report (STYLE.md).
#![allow(clippy::unwrap_used)]

use crate::image_fixtures;

use std::collections::BTreeSet;
use std::fs;

use defender_lite::image::{EntryKind, Image, ImageError, ImageKind, Limits};
use image_fixtures::*;

const CONFIG: &str = r#"{"architecture":"amd64","os":"linux","config":{"ExposedPorts":{"8080/tcp":{}},
    "Env":["PATH=/usr/local/bin:/usr/bin","APP_MODE=prod"],"Entrypoint":["/usr/local/bin/app"],
    "Cmd":["--serve"],"WorkingDir":"/srv"},"rootfs":{"type":"layers","diff_ids":[]}}"#;

/// Two layers and, written out by hand, the filesystem they make.
struct Scenario {
    layers: Vec<Vec<Item>>,
    merged: Vec<Item>,
    hostile: Vec<Item>,
    secret: String,
}

fn scenario(secret_dir: &std::path::Path) -> Scenario {
    let os_release = fixture("debian/os-release");
    // A file outside every image root, named by absolute and by climbing links.
    let secret = secret_dir.join("secret.txt");
    fs::write(&secret, "HOST SECRET").unwrap();
    let secret_abs = secret.display().to_string();
    // Enough `..` to reach the host's `/` from any temp dir, then down to the secret.
    let climb = format!("{}{}", "../".repeat(40), secret_abs.trim_start_matches('/'));
    let common = vec![
        file("usr/lib/os-release", &os_release),
        symlink("etc/os-release", "../usr/lib/os-release"),
        symlink("lib", "usr/lib"),
        symlink("etc/leak", &climb),
        symlink("etc/leak-abs", &secret_abs),
        symlink("etc/loop", "loop"),
        file("opt/app/keep.txt", "keep"),
    ];
    let mut layer1 = common.clone();
    layer1.extend([
        file("etc/hostname", "layer1"),
        file("opt/cache/a.bin", "aaa"),
        file("tmp/gone.txt", "gone"),
        file("srv/old/one.txt", "1"),
        file("srv/old/deep/two.txt", "2"),
    ]);
    let layer2 = vec![
        whiteout("tmp/gone.txt"),
        whiteout("srv/old"),
        opaque("opt/cache"),
        file("opt/cache/b.bin", "bbb"),
        file("etc/hostname", "layer2"),
        exec("opt/app/new.txt", "new"),
        hardlink("opt/app/new-link.txt", "opt/app/new.txt"),
    ];
    let mut merged = common;
    merged.extend([
        file("etc/hostname", "layer2"),
        dir("opt/cache"),
        file("opt/cache/b.bin", "bbb"),
        dir("tmp"),
        dir("srv"),
        exec("opt/app/new.txt", "new"),
        hardlink("opt/app/new-link.txt", "opt/app/new.txt"),
        file("abs.txt", "absolute"),
    ]);
    let hostile = vec![
        raw("../../evil.txt", "EVIL"),
        raw("a/../../b.txt", "EVIL"),
        raw("/abs.txt", "absolute"),
    ];
    Scenario {
        layers: vec![layer1, layer2],
        merged,
        hostile,
        secret: "HOST SECRET".into(),
    }
}

/// (path, kind, size, link target, mode of a regular file)
type Listed = (String, EntryKind, u64, Option<String>, Option<u32>);

fn listing(image: &Image) -> BTreeSet<Listed> {
    image
        .entries()
        .map(|e| {
            (
                e.path.to_owned(),
                e.kind,
                e.size,
                e.link_target.map(str::to_owned),
                (e.kind == EntryKind::File).then_some(e.mode),
            )
        })
        .collect()
}

fn read_text(image: &Image, path: &str) -> Option<String> {
    image
        .read(path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .map(|b| String::from_utf8(b).unwrap())
}

#[test]
fn six_forms_read_the_same() {
    let outside = tempfile::tempdir().unwrap();
    let s = scenario(outside.path());
    let forms = all_forms(&s.merged, &s.layers, &s.hostile, CONFIG);
    // The links really lead to the secret when the host follows them.
    let rootfs = &forms.forms[0].1;
    for link in ["etc/leak", "etc/leak-abs"] {
        assert_eq!(fs::read_to_string(rootfs.join(link)).unwrap(), s.secret);
    }
    assert_eq!(forms.forms.len(), 6);
    let reference = Image::open(rootfs).unwrap();
    assert_eq!(reference.kind(), ImageKind::Directory);
    let expected = listing(&reference);
    for (name, path) in &forms.forms {
        let image = Image::open(path).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(listing(&image), expected, "{name}: entries differ");

        // Links inside the image resolve inside it, like a chroot.
        let os_release = String::from_utf8(fixture("debian/os-release")).unwrap();
        assert_eq!(
            read_text(&image, "etc/os-release").as_ref(),
            Some(&os_release),
            "{name}"
        );
        assert_eq!(
            read_text(&image, "/lib/os-release").as_ref(),
            Some(&os_release),
            "{name}"
        );
        assert_eq!(
            image.metadata("lib/os-release").unwrap().unwrap().path,
            "usr/lib/os-release"
        );
        // Links that point out of the root lead nowhere: nothing of the host is read.
        for link in ["etc/leak", "etc/leak-abs"] {
            assert_eq!(read_text(&image, link), None, "{name}: {link}");
        }
        for entry in image.entries().filter(|e| e.kind == EntryKind::File) {
            let bytes = image.read(entry.path).unwrap().unwrap();
            assert!(
                !String::from_utf8_lossy(&bytes).contains(&s.secret),
                "{name}"
            );
        }
        assert!(matches!(
            image.read("etc/loop"),
            Err(ImageError::SymlinkLoop { .. })
        ));

        // Later layers win; whiteouts and the opaque marker hide what was below.
        assert_eq!(
            read_text(&image, "etc/hostname").as_deref(),
            Some("layer2"),
            "{name}"
        );
        for gone in [
            "tmp/gone.txt",
            "opt/cache/a.bin",
            "srv/old/one.txt",
            "srv/old",
        ] {
            assert!(image.metadata(gone).unwrap().is_none(), "{name}: {gone}");
        }
        assert_eq!(read_text(&image, "opt/cache/b.bin").as_deref(), Some("bbb"));
        assert_eq!(
            read_text(&image, "opt/app/new-link.txt").as_deref(),
            Some("new")
        );
        assert!(
            image
                .metadata("opt/app/new.txt")
                .unwrap()
                .unwrap()
                .is_executable()
        );

        // Tar paths are never trusted: `..` entries are dropped, `/x` is taken as `x`.
        assert_eq!(
            read_text(&image, "abs.txt").as_deref(),
            Some("absolute"),
            "{name}"
        );
        assert!(image.glob("**/evil.txt").unwrap().is_empty(), "{name}");
        assert!(image.glob("**/b.txt").unwrap().is_empty(), "{name}");
        if image.kind() != ImageKind::Directory {
            assert!(
                image.warnings().iter().any(|w| w.contains("'..'")),
                "{name}: {:?}",
                image.warnings()
            );
        }

        // Globs: `*` within a component, `**` across them; stored paths, links unfollowed.
        let txt: Vec<&str> = image
            .glob("opt/**/*.txt")
            .unwrap()
            .iter()
            .map(|e| e.path)
            .collect();
        assert_eq!(
            txt,
            [
                "opt/app/keep.txt",
                "opt/app/new-link.txt",
                "opt/app/new.txt"
            ],
            "{name}"
        );
        assert!(image.glob("lib/*").unwrap().is_empty(), "{name}");
        let lib = image.read_dir("lib").unwrap().unwrap();
        let names: Vec<&str> = lib.iter().map(|e| e.file_name()).collect();
        assert_eq!(names, ["os-release"], "{name}");

        // Batches come back in storage order, each with what `read` would give.
        let mut got = Vec::new();
        image
            .read_each(
                &["opt/cache/b.bin", "missing", "etc/hostname", "etc"],
                1024,
                |path, result| got.push((path.to_owned(), result.map_err(|e| e.to_string()))),
            )
            .unwrap();
        got.sort();
        assert_eq!(
            got[0],
            ("etc".into(), Err("etc: not a regular file".into()))
        );
        assert_eq!(
            got[1],
            ("etc/hostname".into(), Ok(Some(b"layer2".to_vec())))
        );
        assert_eq!(got[2], ("missing".into(), Ok(None)));
        assert_eq!(
            got[3],
            ("opt/cache/b.bin".into(), Ok(Some(b"bbb".to_vec())))
        );
        assert!(matches!(
            image.read_capped("etc/hostname", 3),
            Err(ImageError::TooLarge { size: 6, .. })
        ));

        if let ImageKind::DockerSave { layers, .. } = image.kind() {
            assert_eq!(layers, 2);
            let config = image.config().unwrap().config.as_ref().unwrap();
            assert_eq!(config.exposed_ports(), ["8080/tcp"]);
            assert_eq!(config.env_var("APP_MODE"), Some("prod"));
            assert_eq!(
                config.entrypoint.as_deref(),
                Some(&["/usr/local/bin/app".to_owned()][..])
            );
            assert_eq!(config.working_dir.as_deref(), Some("/srv"));
            assert_eq!(image.repo_tags(), ["example/app:1.0"]);
            assert_eq!(image.config_json().unwrap()["architecture"], "amd64");
        } else {
            assert!(image.config().is_none());
        }
    }
}

#[test]
fn streams_seek_within_a_file() {
    let outside = tempfile::tempdir().unwrap();
    let s = scenario(outside.path());
    let forms = all_forms(&s.merged, &s.layers, &s.hostile, CONFIG);
    for (name, path) in &forms.forms {
        let image = Image::open(path).unwrap();
        let mut seen = Vec::new();
        image
            .stream_each(&["usr/lib/os-release", "etc/hostname"], |path, stream| {
                use std::io::{Read, Seek, SeekFrom};
                let stream = stream.unwrap();
                let mut tail = String::new();
                stream.seek(SeekFrom::End(-6)).unwrap();
                stream.read_to_string(&mut tail).unwrap();
                let mut head = [0u8; 4];
                stream.seek(SeekFrom::Start(0)).unwrap();
                stream.read_exact(&mut head).unwrap();
                seen.push((
                    path.to_owned(),
                    String::from_utf8_lossy(&head).into_owned(),
                    tail,
                ));
            })
            .unwrap();
        seen.sort();
        let os_release = String::from_utf8(fixture("debian/os-release")).unwrap();
        let os_tail = os_release[os_release.len() - 6..].to_owned();
        assert_eq!(
            seen,
            [
                ("etc/hostname".into(), "laye".into(), "layer2".into()),
                ("usr/lib/os-release".into(), "PRET".into(), os_tail),
            ],
            "{name}"
        );
    }
}

#[test]
fn hostile_archives_hit_caps() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, bytes: &[u8]| {
        let path = dir.path().join(name);
        fs::write(&path, bytes).unwrap();
        path
    };

    // Not an archive at all.
    let junk = write("junk.bin", &[0x42; 4096]);
    assert!(matches!(
        Image::open(&junk),
        Err(ImageError::UnknownFormat { .. })
    ));
    let empty = write("empty.tar", b"");
    assert!(matches!(
        Image::open(&empty),
        Err(ImageError::UnknownFormat { .. })
    ));

    // A PAX header asking for more memory than the cap.
    let mut builder = tar::Builder::new(Vec::new());
    builder
        .append_pax_extensions([("comment", vec![b'x'; 4096].as_slice())])
        .unwrap();
    let mut header = tar::Header::new_gnu();
    header.set_size(1);
    builder.append_data(&mut header, "f", &b"x"[..]).unwrap();
    let pax = write("pax.tar", &builder.into_inner().unwrap());
    let small = Limits {
        max_extension: 1024,
        ..Limits::default()
    };
    assert!(matches!(
        Image::open_with(&pax, small),
        Err(ImageError::LimitExceeded { .. })
    ));
    assert!(Image::open(&pax).is_ok());

    // Too many entries, and a decompression budget.
    let many: Vec<Item> = (0..50).map(|i| file(&format!("f{i}"), "x")).collect();
    let many = write("many.tar.gz", &gzip(&tar(&many)));
    let few = Limits {
        max_entries: 10,
        ..Limits::default()
    };
    assert!(matches!(
        Image::open_with(&many, few),
        Err(ImageError::LimitExceeded { .. })
    ));
    let tight = Limits {
        max_archive_bytes: 4096,
        ..Limits::default()
    };
    assert!(matches!(
        Image::open_with(&many, tight),
        Err(ImageError::LimitExceeded { .. })
    ));

    // A gzip bomb: 100 MB of zeros in 100 KB. Past 100 times the file plus 64 MiB, the
    // walk stops and says why; allowed a larger expansion, the same file opens.
    let bomb = dir.path().join("bomb.tar.gz");
    use std::io::Read as _;
    {
        let gz = flate2::write::GzEncoder::new(
            fs::File::create(&bomb).unwrap(),
            flate2::Compression::best(),
        );
        let mut builder = ::tar::Builder::new(gz);
        let mut header = ::tar::Header::new_gnu();
        header.set_size(100_000_000);
        header.set_mode(0o644);
        header.set_cksum();
        builder
            .append_data(&mut header, "zeros", std::io::repeat(0).take(100_000_000))
            .unwrap();
        builder.into_inner().unwrap().finish().unwrap();
    }
    assert!(fs::metadata(&bomb).unwrap().len() < 200_000);
    match Image::open(&bomb) {
        Err(ImageError::LimitExceeded { reason, .. }) => {
            assert!(reason.contains("decompression bomb"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    let lenient = Limits {
        max_expansion: 2_000,
        ..Limits::default()
    };
    assert!(Image::open_with(&bomb, lenient).is_ok());

    // A truncated gzip stream is an error, not a short image.
    let whole = gzip(&tar(&[file("a", vec![7u8; 100_000])]));
    let cut = write("cut.tar.gz", &whole[..whole.len() / 2]);
    assert!(Image::open(&cut).is_err());

    // A layer compressed with something this module does not read is named.
    let zstd_layer = [0x28, 0xb5, 0x2f, 0xfd, 0, 0, 0, 0].repeat(100);
    let save = write("zstd.tar", &docker_save(&[zstd_layer], "{}", &[]));
    let err = Image::open(&save).unwrap_err().to_string();
    assert!(err.contains("zstd"), "{err}");

    // A manifest naming a layer outside the archive.
    let mut builder = tar::Builder::new(Vec::new());
    let manifest = br#"[{"Config":"c.json","Layers":["../../etc/passwd"]}]"#;
    let mut header = tar::Header::new_gnu();
    header.set_size(manifest.len() as u64);
    builder
        .append_data(&mut header, "manifest.json", &manifest[..])
        .unwrap();
    let mut header = tar::Header::new_gnu();
    header.set_size(2);
    builder
        .append_data(&mut header, "c.json", &b"{}"[..])
        .unwrap();
    let escape = write("escape.tar", &builder.into_inner().unwrap());
    assert!(matches!(
        Image::open(&escape),
        Err(ImageError::Manifest { .. })
    ));

    // An OCI image layout is refused by name rather than read as an empty root filesystem.
    let oci = write(
        "oci.tar",
        &tar(&[
            file("oci-layout", r#"{"imageLayoutVersion":"1.0.0"}"#),
            file("index.json", r#"{"schemaVersion":2,"manifests":[]}"#),
            file("blobs/sha256/00", "{}"),
        ]),
    );
    let err = Image::open(&oci).unwrap_err().to_string();
    assert!(err.contains("OCI image layout"), "{err}");

    // A manifest.json that is not a docker save manifest: just a file of a flat rootfs.
    let flat = write(
        "flat-with-manifest.tar",
        &tar(&[
            file("manifest.json", r#"{"name":"web app"}"#),
            file("a", "1"),
        ]),
    );
    let image = Image::open(&flat).unwrap();
    assert_eq!(image.kind(), ImageKind::Tar { gzip: false });
    assert_eq!(image.read("a").unwrap().unwrap(), b"1");

    // Symbolic link chains are cut at the hop limit.
    let mut chain: Vec<Item> = (0..50)
        .map(|i| symlink(&format!("l{i}"), &format!("l{}", i + 1)))
        .collect();
    chain.push(file("l50", "end"));
    let chain = write("chain.tar", &tar(&chain));
    let image = Image::open(&chain).unwrap();
    assert!(matches!(
        image.read("l0"),
        Err(ImageError::SymlinkLoop { .. })
    ));
    assert_eq!(image.read("l20").unwrap().unwrap(), b"end");
}

#[test]
fn directory_walk_stays_inside() {
    let dir = tempfile::tempdir().unwrap();
    let outside = dir.path().join("outside");
    write_rootfs(&outside, &[file("big/secret", "HOST")]);
    let root = dir.path().join("root");
    write_rootfs(
        &root,
        &[
            file("etc/hostname", "inside"),
            symlink("mnt/host", outside.to_str().unwrap()),
            symlink("mnt/up", "../../outside"),
        ],
    );
    let image = Image::open(&root).unwrap();
    let paths: Vec<&str> = image.entries().map(|e| e.path).collect();
    assert_eq!(paths, ["etc", "etc/hostname", "mnt", "mnt/host", "mnt/up"]);
    assert_eq!(image.read("mnt/host/big/secret").unwrap(), None);
    assert_eq!(image.read("mnt/up/big/secret").unwrap(), None);
    assert!(image.read_dir("mnt/host").unwrap().is_none());

    // A link swapped in after indexing is refused by the kernel (O_NOFOLLOW), not followed.
    fs::remove_file(root.join("etc/hostname")).unwrap();
    std::os::unix::fs::symlink(outside.join("big/secret"), root.join("etc/hostname")).unwrap();
    assert!(matches!(
        image.read("etc/hostname"),
        Err(ImageError::Io { .. })
    ));
    // A fifo swapped in is opened without waiting for a writer and refused by its type.
    fs::remove_file(root.join("etc/hostname")).unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(root.join("etc/hostname"))
        .status()
        .unwrap();
    assert!(made.success());
    match image.read("etc/hostname") {
        Err(ImageError::Io { source, .. }) => {
            assert!(
                source.to_string().contains("not a regular file"),
                "{source}"
            )
        }
        other => panic!("{other:?}"),
    }
    fs::remove_dir_all(root.join("etc")).unwrap();
    std::os::unix::fs::symlink(outside.join("big"), root.join("etc")).unwrap();
    assert!(matches!(
        image.read("etc/hostname"),
        Err(ImageError::Io { .. })
    ));
}
