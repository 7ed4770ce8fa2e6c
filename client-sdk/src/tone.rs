//! A deterministic Opus-encoded sine tone: the SDK's only audio source.
//!
//! Determinism is the point: libopus produces the same bytes for the same PCM and settings, so a
//! test (or the load-test tool) that builds a [`ToneEncoder`] with the publisher's [`ToneConfig`]
//! knows every payload the publisher will send, in order, without any side channel. Frame `i` of
//! the tone is the `i`-th call to [`ToneEncoder::next_frame`].

use bytes::Bytes;
use opus::{Application, Channels, Encoder};

/// Opus always runs its RTP clock at 48 kHz (RFC 7587), whatever the audio bandwidth.
pub const SAMPLE_RATE: u32 = 48_000;
/// Samples per channel in one 20 ms frame, and so the RTP timestamp step between packets.
pub const FRAME_SAMPLES: usize = 960;
/// The frame duration the tone is paced at.
pub const FRAME_DURATION: std::time::Duration = std::time::Duration::from_millis(20);

/// Largest Opus packet libopus may produce for one frame (RFC 6716 §3.2.1 caps a frame at 1275
/// bytes); sizing the output buffer to it means encoding never fails for lack of room.
const MAX_PACKET: usize = 1275;

/// What tone to send. Two encoders with equal configs produce identical payload sequences.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ToneConfig {
    /// Tone frequency in Hz; keep it well under 8 kHz so Opus in any bandwidth keeps it.
    pub frequency_hz: f64,
    /// Peak amplitude as a fraction of full scale, `0.0..=1.0`.
    pub amplitude: f64,
}

impl ToneConfig {
    /// Just above 440 Hz, by an irrational-looking amount. At exactly 440 Hz a 20 ms frame
    /// holds 8.8 cycles, so the PCM repeats every 5 frames and libopus settles into repeating
    /// the same 5 payloads (measured: 26 distinct payloads in 3000 frames). Here the phase at
    /// each frame start never recurs, so every payload differs (measured: 15000 distinct in
    /// 15000 frames, 5 minutes) and a received payload pins down which frame it is.
    pub const DISTINCT_FRAMES_HZ: f64 = 440.0 + std::f64::consts::SQRT_2 / 10.0;
}

impl Default for ToneConfig {
    fn default() -> Self {
        Self {
            frequency_hz: Self::DISTINCT_FRAMES_HZ,
            amplitude: 0.5,
        }
    }
}

/// Generates the tone's PCM and encodes it to Opus one 20 ms frame at a time (mono).
pub struct ToneEncoder {
    config: ToneConfig,
    encoder: Encoder,
    /// Index of the next sample to generate. The phase is computed from this absolute index
    /// rather than accumulated, so float error does not drift over a long run.
    next_sample: u64,
    pcm: Vec<i16>,
    out: Vec<u8>,
}

impl ToneEncoder {
    pub fn new(config: ToneConfig) -> Result<Self, opus::Error> {
        Ok(Self {
            config,
            encoder: Encoder::new(SAMPLE_RATE, Channels::Mono, Application::Audio)?,
            next_sample: 0,
            pcm: vec![0; FRAME_SAMPLES],
            out: vec![0; MAX_PACKET],
        })
    }

    /// The PCM of the next frame, without encoding it (what a decoder should roughly give back).
    fn fill_pcm(&mut self) {
        let amplitude = self.config.amplitude.clamp(0.0, 1.0) * f64::from(i16::MAX);
        for (offset, sample) in self.pcm.iter_mut().enumerate() {
            let n = self.next_sample + offset as u64;
            // The fractional cycle count keeps the argument of `sin` small and exact enough.
            let cycles = (n as f64 * self.config.frequency_hz / f64::from(SAMPLE_RATE)).fract();
            *sample = (amplitude * (std::f64::consts::TAU * cycles).sin()) as i16;
        }
        self.next_sample += FRAME_SAMPLES as u64;
    }

    /// Encodes the next 20 ms of the tone into one Opus packet.
    pub fn next_frame(&mut self) -> Result<Bytes, opus::Error> {
        self.fill_pcm();
        let len = self.encoder.encode(&self.pcm, &mut self.out)?;
        Ok(Bytes::copy_from_slice(&self.out[..len]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_configs_give_equal_payloads() {
        let mut a = ToneEncoder::new(ToneConfig::default()).unwrap();
        let mut b = ToneEncoder::new(ToneConfig::default()).unwrap();
        for _ in 0..100 {
            assert_eq!(a.next_frame().unwrap(), b.next_frame().unwrap());
        }
    }

    #[test]
    fn default_tone_payloads_are_distinct() {
        let mut tone = ToneEncoder::new(ToneConfig::default()).unwrap();
        let mut seen = std::collections::HashSet::new();
        for frame in 0..1500 {
            assert!(
                seen.insert(tone.next_frame().unwrap()),
                "frame {frame} repeats"
            );
        }
    }

    #[test]
    fn pcm_is_a_continuous_sine() {
        let config = ToneConfig {
            frequency_hz: 1000.0,
            amplitude: 1.0,
        };
        let mut tone = ToneEncoder::new(config).unwrap();
        tone.fill_pcm();
        let first = tone.pcm.clone();
        tone.fill_pcm();
        // 1 kHz at 48 kHz is 48 samples per cycle; 960 = 20 cycles, so frames repeat exactly.
        assert_eq!(first, tone.pcm);
        assert_eq!(first[0], 0);
        assert_eq!(first[12], i16::MAX); // a quarter cycle in
    }

    #[test]
    fn decoded_tone_is_loud() {
        let mut tone = ToneEncoder::new(ToneConfig::default()).unwrap();
        let mut decoder = opus::Decoder::new(SAMPLE_RATE, Channels::Mono).unwrap();
        let mut pcm = vec![0i16; FRAME_SAMPLES];
        let mut energy = 0.0;
        for _ in 0..25 {
            let n = decoder
                .decode(&tone.next_frame().unwrap(), &mut pcm, false)
                .unwrap();
            assert_eq!(n, FRAME_SAMPLES);
            energy += pcm.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>();
        }
        let rms = (energy / (25 * FRAME_SAMPLES) as f64).sqrt();
        // A sine of peak 0.5 full scale has RMS 0.5 / sqrt(2) ≈ 11585; allow codec start-up.
        assert!(rms > 8000.0, "rms {rms}");
    }
}
