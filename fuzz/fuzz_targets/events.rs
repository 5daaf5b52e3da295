//! The `--events` decoder of `defender-lite monitor` (`monitor::input::EventReader`): JSON
//! lines of any length and content. An event read is written back and read again: the
//! same event, so what the agent records and what it reads agree. Seeds: the event
//! examples of defender-lite/EVENTS.md, one per seed and all together.
#![no_main]

use defender_lite::monitor::input::EventReader;
use libfuzzer_sys::fuzz_target;

/// A smaller line cap than the default, so the too-long path is reached too.
const MAX_LINE: usize = 4096;

fn seeds() -> Vec<fuzz::Seed> {
    let doc = String::from_utf8(fuzz::fixture("defender-lite/EVENTS.md")).unwrap();
    let lines: Vec<&str> = doc.lines().filter(|l| l.starts_with("{\"ts\"")).collect();
    let mut out: Vec<fuzz::Seed> = lines
        .iter()
        .enumerate()
        .map(|(i, l)| (format!("events-md-{i}"), l.as_bytes().to_vec()))
        .collect();
    out.push(("events-md-all".into(), lines.join("\n").into_bytes()));
    out
}

fuzz_target!(init: fuzz::seeds(seeds), |data: &[u8]| {
    let mut reader = EventReader::with_max_line(data, MAX_LINE);
    while let Some(read) = reader.next_event().expect("reading from memory") {
        let Ok(event) = read else {
            continue;
        };
        let _ = event.pid();
        let line = serde_json::to_string(&event).expect("an event serializes");
        let mut again = EventReader::new(line.as_bytes());
        match again.next_event() {
            Ok(Some(Ok(back))) => assert_eq!(back, event, "{line}"),
            other => panic!("an event written as {line} reads back as {other:?}"),
        }
    }
});
