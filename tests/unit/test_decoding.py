"""workbench.data.decoding and the frame sampling of workbench.data.video, on tiny generated clips.

Ground truth never comes from the code under test: every generated frame carries its number in the
picture (tests/helpers/clips.py), and each clip's presentation times are the ones it was made with.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.helpers.clips import X264, Clip, encode, frame_index, make_clips
from tests.helpers.clips import frames as numbered_frames
from workbench.data import decoding
from workbench.data.decoder_pool import DecoderPool
from workbench.data.sniff import not_video_reason
from workbench.data.video import (UnsupportedCodecError, VideoError, frame_indices_at_fps, frame_numbers_at_fps,
                                  frame_times_at_fps, load_clip, probe, resize_crop)


@pytest.fixture(scope="session")
def clips(tmp_path_factory) -> dict[str, Clip]:
    return make_clips(tmp_path_factory.mktemp("decoding-clips"))


def numbers_in(frames) -> list[int]:
    """The numbers the generated frames carry; frames (F, H, W, 3) uint8 or a load_clip (C, F, H, W) tensor."""
    if isinstance(frames, torch.Tensor):
        frames = ((frames.permute(1, 2, 3, 0) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
    return [frame_index(f) for f in frames]


def every_frame_by_time(clip: Clip) -> list[int]:
    """Decode every frame of ``clip`` through read_frames, asking for it at its own presentation time."""
    info = probe(clip.path)
    assert info.num_frames == clip.num_frames
    frames = decoding.read_frames(clip.path, [info.display_midpoint(k) for k in range(info.num_frames)])
    assert frames.dtype == np.uint8 and frames.shape == (clip.num_frames, clip.height, clip.width, 3)
    return numbers_in(frames)


def decord_reader(path):
    import decord

    return decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)


def load_clip_before(path, num_frames, height, width, target_fps) -> torch.Tensor:
    """load_clip as it was before the decoding module: decord, frame_indices_at_fps on its avg fps."""
    reader = decord_reader(path)
    indices = frame_indices_at_fps(len(reader), float(reader.get_avg_fps()), num_frames, target_fps)
    video = torch.from_numpy(reader.get_batch(indices).asnumpy()).permute(0, 3, 1, 2).float()
    return (resize_crop(video, height, width) / 127.5 - 1.0).permute(1, 0, 2, 3).contiguous()


# -- ordinary clips: exactly the frames they gave before ----------------------------------------------------
@pytest.mark.parametrize("name", ["h264.mp4", "h264_2997.mkv", "project.mp4", "h264_wide.mp4"])
def test_ordinary_clips_give_the_frames_they_gave_before(clips, name):
    clip = clips[name]
    reader = decord_reader(clip.path)
    info = probe(clip.path)
    assert (info.num_frames, info.fps) == (len(reader), reader.get_avg_fps())  # the very numbers decord gives
    assert not info.vfr and info.backend == "decord"
    # with and without resampling, including centres that fall between two frames (round's ties)
    for num_frames, fps in [(9, 8.0), (9, None), (13, 12.0), (5, 6.0), (17, None), (9, 11.0)]:
        indices = frame_indices_at_fps(len(reader), reader.get_avg_fps(), num_frames, fps)
        assert frame_numbers_at_fps(info, num_frames, fps) == indices
        frames = decoding.read_frames(clip.path, frame_times_at_fps(info, num_frames, fps))
        np.testing.assert_array_equal(frames, reader.get_batch(indices).asnumpy())
    expected = load_clip_before(clip.path, 9, 32, 32, 8.0)
    assert torch.equal(load_clip(clip.path, 9, 32, 32, 8.0), expected)


def test_pyav_gives_the_same_pixels_as_decord(clips):
    """So a clip that moves to PyAV (or back) trains on the same frames."""
    clip = clips["h264.mp4"]
    times = [clip.times[k] + 0.01 for k in range(0, 48, 5)]
    np.testing.assert_array_equal(decoding.read_frames(clip.path, times, backend="pyav"),
                                  decoding.read_frames(clip.path, times, backend="decord"))


# -- what decord cannot read ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["av1.mp4", "av1.mkv"])
def test_av1_decodes(clips, name):
    clip = clips[name]
    with pytest.raises(Exception, match="cannot find video stream"):  # decord's FFmpeg 4.1 has no AV1 decoder
        decord_reader(clip.path)
    info = probe(clip.path)
    assert (info.codec, info.backend, info.vfr) == ("av1", "pyav", False)
    assert (info.num_frames, info.fps, info.height, info.width) == (48, 24.0, 48, 64)
    assert info.duration == pytest.approx(2.0, abs=2e-3)  # mkv: a 1 ms clock
    assert every_frame_by_time(clip) == list(range(48))
    assert numbers_in(load_clip(clip.path, 9, 48, 64, 8.0)) == frame_indices_at_fps(48, 24.0, 9, 8.0)


def test_animated_gif_decodes(clips):
    clip = clips["anim.gif"]
    info = probe(clip.path)
    assert (info.codec, info.backend, info.vfr) == ("gif", "pyav", False)
    assert (info.num_frames, info.fps, info.height, info.width) == (20, 10.0, 48, 64)
    assert every_frame_by_time(clip) == list(range(20))
    assert numbers_in(load_clip(clip.path, 5, 48, 64, 5.0)) == frame_indices_at_fps(20, 10.0, 5, 5.0)


@pytest.mark.parametrize("width", [16, 24, 48, 72])
def test_widths_decord_mangles_give_three_channel_frames(clips, width):
    clip = clips[f"w{width}.mp4"]
    assert decord_reader(clip.path)[0].shape[2] in (4, 6)  # the decord bug
    info = probe(clip.path)
    assert info.backend == "pyav" and info.width == width
    assert every_frame_by_time(clip) == list(range(48))
    assert load_clip(clip.path, 9, 32, 32, 8.0).shape == (3, 9, 32, 32)


def test_bad_width_rule_matches_decord():
    """A sweep of decord 0.6 over every even width from 8 to 256 px failed at exactly these."""
    assert [w for w in range(8, 258, 2) if decoding.decord_bad_width(w)] == [8, 12, 16, 24, 48, 72]


def test_when_decord_returns_misshaped_frames_pyav_answers(clips, monkeypatch):
    """A decord failure the rules do not foresee (here: the width rule switched off) costs speed only."""
    clip = clips["w48.mp4"]
    monkeypatch.setattr(decoding, "decord_bad_width", lambda width, align=32: False)
    read_by = []
    real_read_pyav = decoding._read_pyav
    monkeypatch.setattr(decoding, "_read_pyav", lambda scan, wanted: read_by.append("pyav") or
                        real_read_pyav(scan, wanted))
    assert probe(clip.path).backend == "decord"
    assert every_frame_by_time(clip) == list(range(48)) and read_by == ["pyav"]
    with pytest.raises(VideoError, match="decord could not decode it"):
        decoding.read_frames(clip.path, [0.0], backend="decord")


# -- variable frame rate ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["vfr.mp4", "vfr.mkv"])
def test_vfr_clip_is_flagged_and_takes_its_frames_by_time(clips, name):
    clip = clips[name]  # 30 fps for 1 s, then 10 fps up to 2 s: 41 frames
    info = probe(clip.path)
    assert info.vfr and info.fps == pytest.approx(20.0, rel=1e-3)  # the mean rate: 40 intervals in 2 s
    lowest, highest = info.fps_range
    assert lowest == pytest.approx(10, rel=0.05) and highest == pytest.approx(30, rel=0.05)
    np.testing.assert_allclose(info.frame_times, clip.times, atol=1.5e-3)  # mkv: a 1 ms clock
    assert every_frame_by_time(clip) == list(range(41))
    # 9 frames at 6 fps centred on 1 s: times 1/3, 1/2, ... 5/3 s; the frames presented nearest to them
    expected = [10, 15, 20, 25, 30, 32, 33, 35, 37]
    assert numbers_in(load_clip(clip.path, 9, 48, 64, 6.0)) == expected
    # what the constant-rate arithmetic on decord's average fps took instead
    reader = decord_reader(clip.path)
    by_average_fps = frame_indices_at_fps(len(reader), reader.get_avg_fps(), 9, 6.0)
    assert sum(a != b for a, b in zip(by_average_fps, expected)) >= 3
    # VFR stays on decord, which gives the right frames once times map to frames by the real timestamps
    assert info.backend == "decord"
    times = frame_times_at_fps(info, 9, 6.0)
    np.testing.assert_array_equal(decoding.read_frames(clip.path, times, backend="decord"),
                                  decoding.read_frames(clip.path, times, backend="pyav"))


def test_vfr_threshold():
    def vfr(times, tick):
        times = np.sort(np.asarray(times, dtype=float))
        return decoding._is_vfr(times - times[0], tick)

    n = 300
    ntsc = np.arange(n) * 1001 / 30000
    assert not vfr(np.round(ntsc * 1000) / 1000, 1e-3)  # 29.97 fps in Matroska's 1 ms clock: 33/34 ms
    assert not vfr(np.round(np.arange(n) / 30 * 100) / 100, 0.01)  # 30 fps GIF: 3/3/4 cs delays
    rng = np.random.default_rng(1)
    assert not vfr(np.arange(n) / 30 + rng.uniform(-0.004, 0.004, n), 1e-6)  # capture jitter, no drift
    assert vfr(np.r_[np.arange(30) / 30, 1 + np.arange(30) / 10], 1e-3)  # 30 -> 10 fps
    dropped = np.arange(n) / 30.0
    dropped[100:] += 2 / 30  # two dropped frames
    assert vfr(dropped, 1e-3)


# -- rotation ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("degrees", [90, 180, 270])
def test_rotation_as_decord_applies_it(clips, degrees):
    clip = clips[f"rot{degrees}.mp4"]
    info = probe(clip.path)
    assert info.rotation == degrees and (info.height, info.width) == (clip.height, clip.width)
    times = [clip.times[k] + 0.01 for k in range(0, 48, 7)]
    by_pyav = decoding.read_frames(clip.path, times, backend="pyav")
    np.testing.assert_array_equal(by_pyav, decoding.read_frames(clip.path, times, backend="decord"))
    upright = decoding.read_frames(clips["rot0.mp4"].path, times)
    np.testing.assert_array_equal(by_pyav, np.rot90(upright, degrees // 90, axes=(1, 2)))


# -- seeking ------------------------------------------------------------------------------------------------------
def test_pyav_seeks_to_the_right_frames(clips, monkeypatch):
    clip = clips["gop6.mkv"]  # a keyframe every 6 frames
    probe(clip.path)  # scanned (and cached) before the spy below goes in
    seeks = []

    class SeekSpy:
        def __init__(self, container):
            self.container = container

        def __getattr__(self, name):
            return getattr(self.container, name)

        def seek(self, *args, **kwargs):
            seeks.append(args[0])
            return self.container.seek(*args, **kwargs)

    open_container = decoding._open_av
    monkeypatch.setattr(decoding, "_open_av", lambda path: SeekSpy(open_container(path)))
    rng = np.random.default_rng(3)
    for numbers in (np.sort(rng.choice(60, 9, replace=False)), rng.choice(60, 7), [59, 0, 30, 30, 5]):
        times = [clip.times[k] + 0.02 for k in numbers]  # the clock is 1 ms; frames last 41.7 ms
        assert numbers_in(decoding.read_frames(clip.path, times, backend="pyav")) == list(numbers)
    seeks.clear()
    assert numbers_in(decoding.read_frames(clip.path, [0.14, 1.27, 2.48], backend="pyav")) == [3, 30, 59]
    assert len(seeks) == 2  # it skipped the GOPs in between


# -- errors --------------------------------------------------------------------------------------------------------
def test_unsupported_codec_names_the_codec_and_the_fix(clips):
    if "avs2.ts" not in clips:
        pytest.skip("this ffmpeg build has no AVS2 encoder")
    path = clips["avs2.ts"].path
    with pytest.raises(UnsupportedCodecError) as caught:
        probe(path)
    assert isinstance(caught.value, VideoError) and caught.value.codec == "avs2"
    message = str(caught.value)
    assert "'avs2'" in message
    assert f"ffmpeg -i {path} -c:v libx264 -pix_fmt yuv420p {path.with_name('avs2_h264.mp4')}" in message
    with pytest.raises(UnsupportedCodecError):
        load_clip(path, 9, 32, 32, 8.0)


def test_other_decoding_errors(clips, tmp_path):
    with pytest.raises(VideoError, match="file not found"):
        probe(tmp_path / "missing.mp4")
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(VideoError, match="zero-length"):
        probe(tmp_path / "empty.mp4")
    (tmp_path / "notes.mp4").write_text("these are my notes, not a video\n")
    with pytest.raises(VideoError, match="^cannot decode: the file does not open as a video"):
        load_clip(tmp_path / "notes.mp4", 9, 32, 32, 8.0)
    good = clips["h264.mp4"].path.read_bytes()
    (tmp_path / "truncated.mp4").write_bytes(good[: len(good) // 2])  # its index (moov) is at the end
    with pytest.raises(VideoError, match="^cannot decode"):
        load_clip(tmp_path / "truncated.mp4", 9, 32, 32, 8.0)
    # index at the front: FFmpeg reads the first half as if it were all; decord failed on it, and so do we
    faststart = encode(tmp_path / "faststart.mp4", numbered_frames(48), "24", [*X264, "-movflags", "+faststart"])
    faststart = faststart.read_bytes()
    (tmp_path / "cut.mp4").write_bytes(faststart[: len(faststart) * 2 // 3])
    with pytest.raises(VideoError, match=r"^cannot decode: the file is cut short: its index lists 48 frames"):
        load_clip(tmp_path / "cut.mp4", 9, 32, 32, 8.0)
    with pytest.raises(VideoError, match="too short"):
        load_clip(clips["h264.mp4"].path, 49, 32, 32, 8.0)
    with pytest.raises(ValueError, match="within the clip"):
        decoding.read_frames(clips["h264.mp4"].path, [2.5])
    import imageio.v2 as imageio

    imageio.imwrite(tmp_path / "still.png", np.zeros((48, 64, 3), np.uint8))  # FFmpeg reads it as 1 frame
    with pytest.raises(VideoError, match=r"an image \(png_pipe\), not a video"):
        probe(tmp_path / "still.png")
    assert not_video_reason(b"RIFF\x10\x27\x00\x00WEBPVP8X").startswith("is a WebP image")


# -- the data check worker ------------------------------------------------------------------------------------
def test_decoder_worker_reads_what_training_reads(clips, tmp_path):
    (tmp_path / "notes.mp4").write_text("these are my notes, not a video\n")
    with DecoderPool(1) as pool:
        def check(path):
            return pool.probe(path, 9, 8.0, decode=True)

        for name in ("h264.mp4", "av1.mp4", "av1.mkv", "anim.gif", "w16.mp4", "w48.mp4", "rot90.mp4"):
            answer = check(clips[name].path)
            assert answer["ok"] and answer["channels"] == 3 and not answer["vfr"], (name, answer)
            assert (answer["height"], answer["width"]) == (clips[name].height, clips[name].width)
        assert check(clips["av1.mkv"].path)["codec"] == "av1"
        vfr = check(clips["vfr.mp4"].path)
        assert vfr["ok"] and vfr["vfr"] and vfr["fps_min"] == pytest.approx(10, rel=0.05)
        assert vfr["fps_max"] == pytest.approx(30, rel=0.05)
        too_short = pool.probe(clips["anim.gif"].path, 33, 8.0, decode=True)
        assert too_short["ok"] and too_short["num_frames"] == 20  # the caller reports it from the frame count
        not_video = check(tmp_path / "notes.mp4")
        assert not not_video["ok"] and "code" not in not_video  # validate.py tells not_video from corrupt
        assert not_video["error"].startswith("the file does not open as a video")
        if "avs2.ts" in clips:
            unsupported = check(clips["avs2.ts"].path)
            assert not unsupported["ok"] and unsupported["code"] == "unsupported_codec"
            assert unsupported["codec"] == "avs2" and "-c:v libx264 -pix_fmt yuv420p" in unsupported["command"]
            assert "'avs2'" in unsupported["error"]
        assert check(clips["h264.mp4"].path)["ok"]  # the worker goes on after a failure


def test_pyav_19_which_refuses_metadata_errors_still_opens_clips(clips, monkeypatch):
    """PyAV 19 removed ``av.open(metadata_errors=)`` (a TypeError there, as seen on the GPU machine's PyAV
    19.0.2, where every clip of a real-size run was skipped); the stand-in refuses it the same way."""
    import av

    real_open = av.open

    def open_19(*args, **kwargs):
        if "metadata_errors" in kwargs:
            raise TypeError("open() got an unexpected keyword argument 'metadata_errors'")
        return real_open(*args, **kwargs)

    monkeypatch.setattr(av, "open", open_19)
    monkeypatch.setattr(av, "__version__", "19.0.2")
    clip = next(iter(clips.values()))
    with decoding._open_av(str(clip.path)) as container:
        assert container.streams.video
