//! The little the SFU reads from SDP text itself; everything else is `rtc`'s job.

use std::collections::HashSet;

use aula_protocol::TrackKind;

/// Track ids (the second `a=msid` value) of m-sections that carry `a=simulcast`.
///
/// `rtc` tells us each simulcast layer as it starts, but whether a track *is* simulcast is
/// known from the offer at once, and the room is told before the other layers arrive.
pub fn simulcast_track_ids(sdp: &str) -> HashSet<String> {
    let mut ids = HashSet::new();
    for section in sdp.split("\nm=").skip(1) {
        let mut track_id = None;
        let mut simulcast = false;
        for line in section.lines() {
            let line = line.trim_end();
            if let Some(msid) = line.strip_prefix("a=msid:") {
                track_id = msid.split_whitespace().nth(1).map(str::to_owned);
            } else if line.starts_with("a=simulcast:") {
                simulcast = true;
            }
        }
        if let (true, Some(id)) = (simulcast, track_id) {
            ids.insert(id);
        }
    }
    ids
}

/// Track ids of m-sections that still send media: not rejected (port 0), not `inactive` or
/// `recvonly`. A publisher's renegotiation that drops a track shows up here, whether it
/// stopped the transceiver or only set it to not send.
pub fn sending_track_ids(sdp: &str) -> HashSet<String> {
    let mut ids = HashSet::new();
    for section in sdp.split("\nm=").skip(1) {
        let rejected = section.split_whitespace().nth(1) == Some("0");
        let mut track_id = None;
        let mut sending = true;
        for line in section.lines() {
            let line = line.trim_end();
            if let Some(msid) = line.strip_prefix("a=msid:") {
                track_id = msid.split_whitespace().nth(1).map(str::to_owned);
            } else if line == "a=inactive" || line == "a=recvonly" {
                sending = false;
            }
        }
        if let (false, true, Some(id)) = (rejected, sending, track_id) {
            ids.insert(id);
        }
    }
    ids
}

/// Every track id an m-section that is not rejected (port 0) names, with the section's media
/// kind. What a track *is* comes from here, whatever its announcement says. A track id is the
/// second value of `a=msid:<stream> <track>` or of `a=ssrc:<ssrc> msid:<stream> <track>`:
/// `rtc` takes it from either, so both are read.
pub fn track_kinds(sdp: &str) -> Vec<(String, TrackKind)> {
    let mut kinds = Vec::new();
    for section in sdp.split("\nm=").skip(1) {
        let mut words = section.split_whitespace();
        let kind = match words.next() {
            Some("audio") => TrackKind::Audio,
            Some("video") => TrackKind::Video,
            _ => continue,
        };
        if words.next() == Some("0") {
            continue;
        }
        for line in section.lines() {
            let line = line.trim_end();
            let msid = line.strip_prefix("a=msid:").or_else(|| {
                let (_ssrc, attribute) = line.strip_prefix("a=ssrc:")?.split_once(' ')?;
                attribute.strip_prefix("msid:")
            });
            if let Some(track_id) = msid.and_then(|m| m.split_whitespace().nth(1)) {
                kinds.push((track_id.to_owned(), kind));
            }
        }
    }
    kinds
}

/// The session's ICE ufrag and password, from the first of each (we write them once).
pub fn ice_credentials(sdp: &str) -> Option<(&str, &str)> {
    let value = |prefix: &str| {
        sdp.lines()
            .find_map(|line| line.trim_end().strip_prefix(prefix))
    };
    Some((value("a=ice-ufrag:")?, value("a=ice-pwd:")?))
}

/// The publish offer as `rtc` must see it for the simulcast tracks in it that are already being
/// received to keep flowing (`published` says which track ids those are); `None` if nothing in
/// it needs hiding.
///
/// `rtc` sets up the receiver of every m-section of a remote offer afresh, and a simulcast
/// section's layers start unbound: each layer's SSRC is learnt from the MID and RID header
/// extensions of its packets. Browsers stop sending those extensions once our receiver reports
/// have acknowledged the SSRC, so a layer forgotten by a renegotiation (a screen share added, an
/// ICE restart) was never learnt again and all its packets were dropped: the camera froze for
/// good. `rtc` takes a section's track from its `a=msid` and `a=ssrc` lines only, and leaves the
/// receiver of a section without them as it is, learnt SSRCs included; so those lines of the
/// published simulcast sections are left out. What `rtc` answers from (mid, direction, codecs,
/// header extensions, rids, simulcast) stays.
pub fn keep_simulcast_receivers(sdp: &str, published: impl Fn(&str) -> bool) -> Option<String> {
    const TRACK_LINES: [&str; 3] = ["a=msid:", "a=ssrc:", "a=ssrc-group:"];
    // The session part, then one entry per m-section, each line with its line ending.
    let mut sections: Vec<Vec<&str>> = vec![Vec::new()];
    for line in sdp.split_inclusive('\n') {
        if line.starts_with("m=") {
            sections.push(Vec::new());
        }
        sections.last_mut().expect("starts with one").push(line);
    }
    let mut hidden = false;
    let mut out = String::with_capacity(sdp.len());
    for section in &sections {
        let simulcast = section.iter().any(|line| line.starts_with("a=rid:"));
        let track_id = section.iter().find_map(|line| {
            let msid = line.trim_end().strip_prefix("a=msid:")?;
            msid.split_whitespace().nth(1)
        });
        let keep = simulcast && track_id.is_some_and(&published);
        for line in section {
            if keep && TRACK_LINES.iter().any(|prefix| line.starts_with(prefix)) {
                hidden = true;
            } else {
                out.push_str(line);
            }
        }
    }
    hidden.then_some(out)
}

/// The audio and video m-sections of an offer that `rtc`'s answer does not really accept,
/// described for the client (e.g. `video (mid 1) offers only FOO/90000`). `rtc` says nothing
/// when it supports none of a section's codecs: in a first offer it rejects the section (port
/// 0); in a renegotiation it answers a new section with a codec negotiated earlier, which the
/// section did not offer. Answers list the offer's sections in order (RFC 9429 §5.3.1), so they
/// are matched by position. Sections the offer itself rejects (port 0) are left out.
pub fn unreceivable_media(offer: &str, answer: &str) -> Vec<String> {
    offer
        .split("\nm=")
        .skip(1)
        .zip(answer.split("\nm=").skip(1))
        .filter(|(offered, answered)| {
            let offered_codecs = codecs(offered);
            let answered_codecs = codecs(answered);
            matches!(offered.split_whitespace().next(), Some("audio" | "video"))
                && !is_rejected(offered)
                && (is_rejected(answered)
                    || (!answered_codecs.is_empty()
                        && !offered_codecs.is_empty()
                        && answered_codecs.is_disjoint(&offered_codecs)))
        })
        .map(|(offered, _)| {
            let media = offered.split_whitespace().next().unwrap_or_default();
            let mid = offered
                .lines()
                .find_map(|line| line.trim_end().strip_prefix("a=mid:"))
                .unwrap_or("?");
            let mut offered_codecs: Vec<String> = codecs(offered).into_iter().collect();
            offered_codecs.sort();
            format!(
                "{media} (mid {mid}) offers only {}",
                offered_codecs.join(", ")
            )
        })
        .collect()
}

/// Whether an m-section (the text after `m=`) is rejected: port 0.
fn is_rejected(section: &str) -> bool {
    section.split_whitespace().nth(1) == Some("0")
}

/// The codecs of an m-section's `a=rtpmap` lines (`VP8/90000`), retransmission left out, in
/// upper case (SDP names are case-insensitive).
fn codecs(section: &str) -> HashSet<String> {
    section
        .lines()
        .filter_map(|line| line.trim_end().strip_prefix("a=rtpmap:"))
        .filter_map(|map| map.split_whitespace().nth(1))
        .map(str::to_ascii_uppercase)
        .filter(|codec| !codec.starts_with("RTX/"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_simulcast_sections() {
        let sdp = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=msid:s1 audio-1\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=msid:s1 cam-1\r\na=rid:q send\r\na=rid:f send\r\na=simulcast:send q;f\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:2\r\na=msid:s2 screen-1\r\n";
        let ids = simulcast_track_ids(sdp);
        assert_eq!(ids, HashSet::from(["cam-1".to_owned()]));
        assert!(simulcast_track_ids("garbage\nm=\n").is_empty());
    }

    #[test]
    fn finds_ice_credentials() {
        assert_eq!(
            ice_credentials("v=0\r\nm=audio 9 X 0\r\na=ice-ufrag:abcd\r\na=ice-pwd:secret\r\n"),
            Some(("abcd", "secret"))
        );
        assert_eq!(ice_credentials("v=0\r\na=ice-ufrag:abcd\r\n"), None);
    }

    #[test]
    fn finds_track_kinds() {
        let sdp = "v=0\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=msid:s mic\r\n\
m=video 0 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=msid:s gone\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:2\r\na=msid:s cam\r\na=ssrc:1 cname:x\r\n\
a=ssrc:2 msid:s other\r\n\
m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:3\r\n";
        assert_eq!(
            track_kinds(sdp),
            vec![
                ("mic".to_owned(), TrackKind::Audio),
                ("cam".to_owned(), TrackKind::Video),
                ("other".to_owned(), TrackKind::Video)
            ]
        );
    }

    #[test]
    fn finds_media_the_answer_does_not_accept() {
        let offer = "v=0\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=rtpmap:111 opus/48000/2\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 120 121\r\na=mid:1\r\na=rtpmap:120 FOO/90000\r\na=rtpmap:121 rtx/90000\r\n\
m=video 0 UDP/TLS/RTP/SAVPF 96\r\na=mid:2\r\na=rtpmap:96 VP8/90000\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 122\r\na=mid:3\r\na=rtpmap:122 BAR/90000\r\n";
        // Section 1 rejected, section 3 answered with a codec it did not offer (as `rtc` does
        // in a renegotiation); section 2 was rejected by the offer itself (a stopped
        // transceiver): not ours to report.
        let answer = "v=0\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=rtpmap:111 OPUS/48000/2\r\n\
m=video 0 UDP/TLS/RTP/SAVPF 0\r\na=mid:1\r\n\
m=video 0 UDP/TLS/RTP/SAVPF 0\r\na=mid:2\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:3\r\na=rtpmap:96 VP8/90000\r\n";
        assert_eq!(
            unreceivable_media(offer, answer),
            vec![
                "video (mid 1) offers only FOO/90000".to_owned(),
                "video (mid 3) offers only BAR/90000".to_owned()
            ]
        );
        assert!(unreceivable_media(offer, offer).is_empty());
    }

    #[test]
    fn finds_sending_sections() {
        let sdp = "v=0\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=sendonly\r\na=msid:s mic\r\n\
m=video 0 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=inactive\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:2\r\na=recvonly\r\na=msid:s screen\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:3\r\na=sendrecv\r\na=msid:s cam\r\n";
        let ids = sending_track_ids(sdp);
        assert_eq!(ids, HashSet::from(["mic".to_owned(), "cam".to_owned()]));
    }

    #[test]
    fn hides_the_track_lines_of_published_simulcast_sections_only() {
        // As Chrome offers a camera (simulcast), a microphone and a screen, shortened.
        let offer = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=msid-semantic: WMS s\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=sendonly\r\na=msid:s mic\r\n\
a=ssrc:11 cname:c\r\na=ssrc:11 msid:s mic\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=sendonly\r\na=msid:s cam\r\n\
a=rid:q send\r\na=rid:h send\r\na=simulcast:send q;h\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:2\r\na=sendonly\r\na=msid:s screen\r\n\
a=ssrc-group:FID 21 22\r\na=ssrc:21 cname:c\r\na=ssrc:22 cname:c\r\n";
        let everything = |_: &str| true;

        let hidden = keep_simulcast_receivers(offer, everything).expect("the camera is hidden");
        assert_eq!(
            hidden,
            offer.replace("a=msid:s cam\r\n", ""),
            "only the simulcast section loses its track lines"
        );
        assert_eq!(simulcast_track_ids(&hidden), HashSet::new());
        assert_eq!(
            sending_track_ids(&hidden).len(),
            2,
            "mic and screen are untouched"
        );

        // A simulcast track not received yet is set up by `rtc` as usual.
        assert_eq!(keep_simulcast_receivers(offer, |id| id != "cam"), None);
        // Firefox lists SSRCs in simulcast sections too: those go with the msid.
        let firefox = offer.replace("a=rid:q send", "a=ssrc:31 cname:c\r\na=rid:q send");
        assert_eq!(keep_simulcast_receivers(&firefox, everything), Some(hidden));
        assert_eq!(keep_simulcast_receivers("garbage\nm=\n", everything), None);
    }
}
