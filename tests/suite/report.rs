//! `tc report` on an out dir made here, without the lab (`status::synthetic_out`), some of its
//! values hostile: the page must fetch nothing and show every value as text.

use super::status::synthetic_out;
use crate::harness::*;

#[test]
fn the_html_report_fetches_nothing_and_escapes_everything() {
    let dir = tempfile::tempdir().unwrap();
    let out = synthetic_out(dir.path(), "done");
    let before = tree(&out);
    let html_path = dir.path().join("incident.html");
    let mut c = tc();
    c.args(["report", "--out"])
        .arg(&out)
        .arg("--html")
        .arg(&html_path);
    let r = run(c).expect(0);
    match r.events.as_slice() {
        [Event::ReportWritten {
            path,
            devices,
            rounds,
            state,
            ..
        }] => {
            assert_eq!(path, &html_path.display().to_string());
            assert_eq!((*devices, *rounds, state.as_str()), (3, 3, "finished"));
        }
        other => panic!("{other:?}\n{}", r.dump()),
    }
    assert_eq!(tree(&out), before, "tc report changed the out dir");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&html_path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let html = std::fs::read_to_string(&html_path).unwrap();
    let lower = html.to_lowercase();
    for bad in [
        "http://",
        "https://",
        "ftp://",
        "src=\"//",
        "href=\"//",
        "src='//",
        "href='//",
        "<script",
        "<img src=x",
        "<link",
        "@import",
        "url(",
        "<iframe",
        "<object",
        "<embed",
    ] {
        assert!(!lower.contains(bad), "{bad:?} in the report:\n{html}");
    }
    // Every src and href is a data: URI or a link inside the page.
    for attr in ["src=\"", "href=\""] {
        for (i, _) in lower.match_indices(attr) {
            let v = &lower[i + attr.len()..];
            assert!(
                v.starts_with("data:image/svg+xml;base64,") || v.starts_with('#'),
                "{attr}{}",
                &v[..v.len().min(40)]
            );
        }
    }
    let escaped = [
        "&lt;script&gt;alert(1)&lt;/script&gt;",
        "&#60;script&#62;alert(1)&#60;/script&#62;",
    ];
    assert!(
        escaped.iter().any(|e| html.contains(e)),
        "the device name is not shown escaped:\n{html}"
    );
    // Each file of the round with its size and sha256; the one under way is not listed.
    let round = out.join("10.0.0.1/1");
    for name in [
        "CPE_device_10.0.0.1_2026-11-27T07.42.13.899869.pcap",
        "OVOC_device_10.0.0.1_2026-11-27T07.42.13.899869-1.pcap",
        "analysis.jsonl",
        "timeline.svg",
    ] {
        let bytes = std::fs::read(round.join(name)).unwrap();
        assert!(html.contains(name), "{name} not listed");
        assert!(html.contains(&sha256_hex(&bytes)), "no sha256 for {name}");
    }
    assert!(
        !html.contains(".merged.pcapng.tmp"),
        "a file under way is listed"
    );
    // The clock, the loss window, the verdict and the task log.
    for want in [
        "+1.500 ms",
        "2026-11-27T07:43:01Z",
        "wan_loss_ovoc_to_cpe",
        "CPE capture retrieved",
        "Connection Lost",
    ] {
        assert!(html.contains(want), "{want:?} missing");
    }
}
