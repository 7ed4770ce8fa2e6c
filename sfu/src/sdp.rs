//! The little the SFU reads from SDP text itself; everything else is `rtc`'s job.

use std::collections::HashSet;

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

/// The session's ICE ufrag and password, from the first of each (we write them once).
pub fn ice_credentials(sdp: &str) -> Option<(&str, &str)> {
    let value = |prefix: &str| {
        sdp.lines()
            .find_map(|line| line.trim_end().strip_prefix(prefix))
    };
    Some((value("a=ice-ufrag:")?, value("a=ice-pwd:")?))
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
    fn finds_sending_sections() {
        let sdp = "v=0\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=sendonly\r\na=msid:s mic\r\n\
m=video 0 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=inactive\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:2\r\na=recvonly\r\na=msid:s screen\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:3\r\na=sendrecv\r\na=msid:s cam\r\n";
        let ids = sending_track_ids(sdp);
        assert_eq!(ids, HashSet::from(["mic".to_owned(), "cam".to_owned()]));
    }
}
