//! Server-Sent Events framing (the `text/event-stream` format of the WHATWG HTML standard,
//! §9.2.6): bytes in, whole frames out, wherever the network happened to split them.

/// One dispatched event: its fields as sent; `data` lines joined with `\n`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Frame {
    /// The `event:` field (the event's type), if sent.
    pub event: Option<String>,
    /// The `id:` field, if sent.
    pub id: Option<String>,
    /// The `data:` lines.
    pub data: String,
}

/// Accumulates chunks and hands back every frame they complete.
#[derive(Debug, Default)]
pub struct Decoder {
    /// Bytes of the line not yet ended; kept as bytes so that a chunk boundary inside a UTF-8
    /// character does not garble it.
    line: Vec<u8>,
    frame: Frame,
    has_data: bool,
}

impl Decoder {
    /// Feeds `chunk`; returns the frames it completed, in order.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<Frame> {
        let mut frames = Vec::new();
        for &byte in chunk {
            if byte != b'\n' {
                self.line.push(byte);
                continue;
            }
            let mut line = std::mem::take(&mut self.line);
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            if let Some(frame) = self.line_ended(&String::from_utf8_lossy(&line)) {
                frames.push(frame);
            }
        }
        frames
    }

    fn line_ended(&mut self, line: &str) -> Option<Frame> {
        if line.is_empty() {
            // A blank line dispatches; without any `data` there is nothing to dispatch (§9.2.6).
            let frame = std::mem::take(&mut self.frame);
            return std::mem::take(&mut self.has_data).then_some(frame);
        }
        if line.starts_with(':') {
            return None; // a comment: axum's keep-alive
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "data" => {
                if self.has_data {
                    self.frame.data.push('\n');
                }
                self.frame.data.push_str(value);
                self.has_data = true;
            }
            "event" => self.frame.event = Some(value.to_owned()),
            "id" => self.frame.id = Some(value.to_owned()),
            _ => {} // `retry` and unknown fields: nothing a client of this API needs
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &str = ": keep-alive\n\nevent: step_started\nid: 2\ndata: {\"seq\":2,\"é\":1}\n\n\
                          event: note\r\ndata: first\r\ndata:second\r\n\r\n";

    fn expected() -> Vec<Frame> {
        vec![
            Frame { event: Some("step_started".into()), id: Some("2".into()), data: "{\"seq\":2,\"é\":1}".into() },
            Frame { event: Some("note".into()), id: None, data: "first\nsecond".into() },
        ]
    }

    #[test]
    fn decodes_whole_frames_and_skips_comments() {
        assert_eq!(Decoder::default().push(STREAM.as_bytes()), expected());
    }

    #[test]
    fn any_split_of_the_bytes_gives_the_same_frames() {
        let bytes = STREAM.as_bytes();
        for cut in 0..bytes.len() {
            let mut d = Decoder::default();
            let mut frames = d.push(&bytes[..cut]);
            frames.extend(d.push(&bytes[cut..]));
            assert_eq!(frames, expected(), "split at byte {cut}");
        }
        let mut d = Decoder::default();
        let one_by_one: Vec<Frame> = bytes.iter().flat_map(|b| d.push(std::slice::from_ref(b))).collect();
        assert_eq!(one_by_one, expected());
    }

    #[test]
    fn an_unfinished_frame_waits_for_its_blank_line() {
        let mut d = Decoder::default();
        assert!(d.push(b"data: x\n").is_empty());
        assert_eq!(d.push(b"\n"), vec![Frame { data: "x".into(), ..Frame::default() }]);
    }
}
