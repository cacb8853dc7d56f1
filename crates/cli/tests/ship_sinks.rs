//! `teelog ship --sink-loki URL --sink-otlp URL` end to end: the real daemon delivers stdin
//! records to a minimal HTTP receiver on 127.0.0.1 standing in for Loki and a collector.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test: a failure should panic

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use common::{keygen, s, teelog};
use prost::Message;

/// One request as received: its path, its lower-cased header lines, its body.
type Request = (String, Vec<String>, Vec<u8>);

/// Answers every request 204 (Loki's push answer; an empty OTLP success is as good) and keeps it.
fn receiver() -> (String, Arc<Mutex<Vec<Request>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let requests = Arc::new(Mutex::new(Vec::new()));
    let keep = requests.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            let keep = keep.clone();
            std::thread::spawn(move || serve(stream, &keep));
        }
    });
    (url, requests)
}

/// HTTP/1.1 with keep-alive, bodies by Content-Length (which is what reqwest sends).
fn serve(stream: TcpStream, requests: &Mutex<Vec<Request>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let path = request_line.split(' ').nth(1).unwrap_or_default().to_string();
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line.trim().is_empty() {
                break;
            }
            headers.push(line.trim().to_ascii_lowercase());
        }
        let length = headers
            .iter()
            .find_map(|h| h.strip_prefix("content-length:"))
            .map_or(0, |n| n.trim().parse().unwrap());
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        requests.lock().unwrap().push((path, headers, body));
        writer.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").unwrap();
    }
}

#[test]
fn the_sink_flags_deliver_stdin_records_to_loki_and_over_otlp() {
    let dir = tempfile::tempdir().unwrap();
    let identity = dir.path().join("id");
    keygen(&identity, &[]);
    let (url, requests) = receiver();
    let input: String = (0..50).map(|n| format!("{{\"message\":\"m {n}\"}}\n")).collect();
    let out = teelog(
        &[
            "ship",
            "--identity",
            s(&identity),
            "--spool",
            s(&dir.path().join("spool")),
            "--stdin",
            "--heartbeat",
            "off",
            "--sink-loki",
            &url,
            "--sink-otlp",
            &format!("{url}/v1/logs"),
        ],
        input.as_bytes(),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let requests = requests.lock().unwrap();
    let (mut loki_records, mut otlp_records) = (0, 0);
    for (path, headers, body) in requests.iter() {
        assert!(headers.iter().any(|h| h == "content-type: application/x-protobuf"), "{headers:?}");
        match path.as_str() {
            "/loki/api/v1/push" => {
                let raw = snap::raw::Decoder::new().decompress_vec(body).unwrap();
                let push = teelog_loki::PushRequest::decode(raw.as_slice()).unwrap();
                for stream in push.streams.iter().filter(|s| s.labels.contains(r#"teelog_kind="record""#)) {
                    assert!(stream.labels.contains(r#"teelog_stream="default""#), "{}", stream.labels);
                    loki_records += stream.entries.len();
                }
            }
            "/v1/logs" => {
                let request = teelog_otlp::decode_protobuf(body).unwrap();
                otlp_records += request.resource_logs[0].scope_logs[0].log_records.len() - 1;
            }
            other => panic!("a request to {other}"),
        }
    }
    assert_eq!((loki_records, otlp_records), (50, 50));
}
