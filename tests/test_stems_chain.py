"""The stems chain (05_stems_enhanced, 06_remixed; 07 puts the master after the remix): stems
flow between steps, each through its route, summed back with what the separation left out.

Real stems: the parts of a short song rendered separately from real instrument samples
(tests/support/parts.py: a GM SoundFont through fluidsynth, espeak-ng as a stand-in voice),
summed into a mix and encoded with LAME; the parts come in through `--stems-from` as a
person's own UVR or audio-separator stems would. The engine path with Demucs itself uses a
tiny random-weight HTDemucs (tests/support/random_demucs.py)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

import restore.engine.variants as variants
import restore.stages as stages
from restore.audio import Audio, Stems, frames_at_rate
from restore.engine.config import RunConfig
from restore.engine.run import plan_run, run
from restore.errors import UsageError
from restore.stages import Stage, StageContext, StageEnv, get_stage
from restore.stages.remix import RemixStage
from restore.stages.route import RouteStage, check_route
from restore.stages.stems_from import find_stems
from tests.support import parts as parts_support

from .conftest import LAME, read_flac, run_cli, write_mp3, write_tagged_mp3

needs_parts = pytest.mark.skipif(parts_support.missing() is not None or LAME is None,
                                 reason=f"the real stems need {parts_support.missing() or 'the lame command (apt-get install lame)'}")
RATE = 44100
NONE = {"route": {s: "none" for s in ("vocals", "drums", "bass", "other", "guitar", "piano")}}


def db(x: np.ndarray, ref: np.ndarray) -> float:
    """10*log10(power of x / power of ref)."""
    return 10 * np.log10(max(float(np.sum(x.astype(np.float64) ** 2)), 1e-30) / float(np.sum(ref.astype(np.float64) ** 2)))


@pytest.fixture(scope="module")
def parts() -> dict[str, np.ndarray]:
    if parts_support.missing():
        pytest.skip(parts_support.missing())
    return {k: v.astype(np.float32) for k, v in parts_support.make_parts(4.0).items()}


def write_stems(folder, stems: dict[str, np.ndarray], names: dict[str, str] | None = None, rate: int = RATE) -> None:
    """Each stem as a 24-bit FLAC: `names` maps stem -> file name (default <stem>.flac)."""
    folder.mkdir(parents=True, exist_ok=True)
    for k, x in stems.items():
        sf.write(str(folder / (names or {}).get(k, f"{k}.flac")), x.T, rate, subtype="PCM_24")


@pytest.fixture
def library(tmp_path, parts):
    """Two songs of the same parts: Band/One.mp3 with its stems in the 04_stems layout, and
    Two.mp3 with UVR / audio-separator names in the stems folder's root."""
    mix = Audio(sum(parts.values()), RATE)
    write_tagged_mp3(tmp_path / "in" / "Band" / "One.mp3", mix)
    write_tagged_mp3(tmp_path / "in" / "Two.mp3", mix)
    write_stems(tmp_path / "stems" / "Band" / "One", parts)
    write_stems(tmp_path / "stems", parts, {"vocals": "Two_(Vocals).flac", "drums": "Two_(Drums)_htdemucs.flac",
                                            "bass": "1_Two_(Bass).flac", "other": "Two_(Other)_htdemucs.wav"})
    return tmp_path


def chain(tmp, names="01,04,05,06", **kw):
    kw.setdefault("report", False)
    return run(RunConfig(inputs=[str(tmp / "in")], out_dir=tmp / "out", variants=variants.resolve_variants(names),
                         stems_from=tmp / "stems", **kw))


def marker(out, variant, song):
    return json.loads((out / "_done" / variant / f"{song}.json").read_text())


def statuses(summary) -> dict:
    return {(r.song, r.variant): r.status for r in summary.results}


# -- the chain through --stems-from, real stems ----------------------------------------------------

@needs_parts
def test_identity_routes_give_back_the_decode_in_both_naming_styles(library):
    summary = chain(library, stage_options=NONE)
    assert set(statuses(summary).values()) == {"done"} and len(summary.results) == 8, summary.results
    out = library / "out"
    for song, folder in (("Band/One", "Band/One"), ("Two", "Two")):
        base, rate = read_flac(out / "01_baseline" / f"{song}.flac")
        remix, remix_rate = read_flac(out / "06_remixed" / f"{song}.flac")
        assert (remix_rate, remix.shape) == (rate, base.shape)                 # stereo, the exact length
        assert db(remix - base, base) < -90                                     # nothing lost
        for stem in ("vocals", "drums", "bass", "other"):
            raw, _ = read_flac(out / "04_stems" / folder / f"{stem}.flac")
            routed, _ = read_flac(out / "05_stems_enhanced" / folder / f"{stem}.flac")
            assert np.array_equal(raw, routed)
        facts = marker(out, "06_remixed", f"{song}.mp3")["stage_facts"]
        assert facts["stems_lag_ms"] == 0.0 and facts["stems_length_diff_ms"] == 0.0   # LAME's gapless tag
        assert -30 < facts["stems_residual_db"] < -12          # MP3 coding: the parts are not the decode
        assert facts["remix.residual_db"] == facts["stems_residual_db"]
        assert facts["vocals.route"] == "none" and facts["remix.scaled_db"] == 0.0
    log = (out / "_logs" / "Two.log").read_text()
    assert "stems_from: 4 stems (bass, drums, other, vocals)" in log and "Two_(<Stem>)" in log
    # The stems came from the files once per song, for all three variants.
    assert "06_remixed: reusing stems_from, route from an earlier variant" in log


@needs_parts
def test_default_routes_enhance_each_stem_as_planned(library):
    summary = chain(library, "04,05,06")
    assert set(statuses(summary).values()) == {"done"}, summary.results
    out = library / "out"
    facts = marker(out, "05_stems_enhanced", "Band/One.mp3")["stage_facts"]
    assert facts["vocals.route"] == "denoise, offline_restore"        # no neural bwe here: the offline one
    assert (facts["drums.route"], facts["other.route"], facts["bass.route"]) == ("offline_restore",) * 2 + ("none",)
    assert "vocals.denoise_level_change_db" in facts and facts["drums.offline_restore.extended"] is True
    for stem in ("vocals", "drums", "bass", "other"):
        assert facts[f"{stem}.rms_before_dbfs"] < -15 and abs(facts[f"{stem}.rms_after_dbfs"] - facts[f"{stem}.rms_before_dbfs"]) < 1
    raw = {s: read_flac(out / "04_stems" / "Band" / "One" / f"{s}.flac")[0] for s in ("vocals", "drums", "bass")}
    new = {s: read_flac(out / "05_stems_enhanced" / "Band" / "One" / f"{s}.flac")[0] for s in ("vocals", "drums", "bass")}
    assert np.array_equal(raw["bass"], new["bass"])                  # bass: unchanged, bit for bit
    assert db(new["vocals"] - raw["vocals"], raw["vocals"]) > -60     # denoised and extended
    cutoff = marker(out, "05_stems_enhanced", "Band/One.mp3")["facts"]["cutoff_hz"]

    def above(x):
        spec = np.abs(np.fft.rfft(x, axis=1)) ** 2
        return spec[:, np.fft.rfftfreq(x.shape[1], 1 / RATE) > cutoff].sum()
    # The parts came from the sources, not the MP3: they have highs; what the route adds is on top.
    assert above(new["drums"]) > above(raw["drums"])
    remix, rate = read_flac(out / "06_remixed" / "Band" / "One.flac")
    assert rate == RATE and remix.shape[1] == raw["bass"].shape[1]
    made = marker(out, "06_remixed", "Band/One.mp3")
    assert made["config"]["steps"][1]["stage"] == "stems_from" and made["config"]["steps"][2]["config"]["bwe"] == "offline_restore"
    assert "route.denoise.model" in made["versions"] and "route.offline_restore.numpy" in made["libraries"]


@needs_parts
def test_a_6_db_vocal_gain_raises_the_vocals_share_by_6_db(library):
    assert set(statuses(chain(library, "01,04,06", stage_options={**NONE, "remix": {"vocals_db": "6"}})).values()) == {"done"}
    out = library / "out"
    base, _ = read_flac(out / "01_baseline" / "Two.flac")
    louder, _ = read_flac(out / "06_remixed" / "Two.flac")
    vocals, _ = read_flac(out / "04_stems" / "Two" / "vocals.flac")
    added = louder - base                                   # what the gain added: (g - 1) x the vocal stem
    g = 10 ** (6 / 20)
    assert db(added - (g - 1) * vocals, vocals) < -80
    # The vocals' share: the remix projected on the vocal stem, against the decode's projection.
    share = lambda x: float(np.sum(x * vocals) / np.sum(vocals * vocals))  # noqa: E731
    assert 20 * np.log10(share(louder) / share(base)) == pytest.approx(6.0, abs=0.25)
    facts = marker(out, "06_remixed", "Two.mp3")["stage_facts"]
    assert facts["remix.vocals_db"] == 6.0 and facts["remix.drums_db"] == 0.0 and facts["remix.scaled_db"] == 0.0
    assert marker(out, "06_remixed", "Two.mp3")["config"]["steps"][3]["config"]["gains_db"]["vocals"] == 6.0


@needs_parts
def test_stems_without_a_gapless_tag_are_lined_up(tmp_path, parts):
    """An MP3 without a LAME tag decodes with the encoder's delay in front: the stems (the
    parts, without it) are lined up by cross-correlation and cut to the decode's length."""
    write_mp3(tmp_path / "in" / "Song.mp3", Audio(sum(parts.values()), RATE))
    write_stems(tmp_path / "stems" / "Song", parts)
    assert set(statuses(chain(tmp_path, "01,04,06", stage_options=NONE)).values()) == {"done"}
    out = tmp_path / "out"
    facts = marker(out, "06_remixed", "Song.mp3")["stage_facts"]
    lag = facts["stems_lag_ms"] * RATE / 1000
    assert -1700 < lag < -1000                               # LAME's 1105 (+ the decoder's 529, where kept)
    assert facts["stems_residual_db"] < -12                  # lined up: the parts account for the song
    base, _ = read_flac(out / "01_baseline" / "Song.flac")
    vocals, _ = read_flac(out / "04_stems" / "Song" / "vocals.flac")
    assert vocals.shape == base.shape
    assert db(read_flac(out / "06_remixed" / "Song.flac")[0] - base, base) < -90


@needs_parts
def test_mismatched_stems_fail_that_song_only(tmp_path, parts):
    mix = Audio(sum(parts.values()), RATE)
    for name in ("Good", "Rate", "Short", "Missing", "Other song", "Nothing", "Twice"):
        write_tagged_mp3(tmp_path / "in" / f"{name}.mp3", mix)
    stems = tmp_path / "stems"
    write_stems(stems / "Good", parts)
    write_stems(stems / "Rate", {**parts, "vocals": parts["vocals"]}, rate=48000)
    write_stems(stems / "Short", {k: x[:, :-RATE // 2] for k, x in parts.items()})
    write_stems(stems / "Missing", {k: x for k, x in parts.items() if k != "drums"})
    write_stems(stems / "Other song", {k: np.roll(x, RATE, axis=1) for k, x in parts.items()})
    write_stems(stems, {"vocals": parts["vocals"]}, {"vocals": "Twice_(Vocals).flac"})
    write_stems(stems, {"vocals": parts["vocals"]}, {"vocals": "Twice_(Vocals)_htdemucs.flac"})
    summary = chain(tmp_path, "01,04", report=False)
    reasons = {r.song: r.reason for r in summary.results if r.variant == "04_stems"}
    assert {r.song for r in summary.results if r.variant == "04_stems" and r.status == "done"} == {"Good.mp3"}
    assert all(r.status == "done" for r in summary.results if r.variant == "01_baseline")   # the batch went on
    assert "is at 48000 Hz, the song at 44100 Hz" in reasons["Rate.mp3"]
    assert "0.500 s shorter than the song" in reasons["Short.mp3"]
    assert "do not add up to this song" in reasons["Missing.mp3"] and "missing: drums" in reasons["Missing.mp3"]
    assert "do not add up to this song" in reasons["Other song.mp3"] or "share no signal" in reasons["Other song.mp3"]
    assert reasons["Nothing.mp3"].startswith("no stems for this song in") and "Nothing_(<Stem>).flac" in reasons["Nothing.mp3"]
    assert "two files for the stem vocals" in reasons["Twice.mp3"]
    assert summary.exit_code == 1


@needs_parts
def test_new_stem_files_redo_the_song_and_the_source_of_the_stems_is_in_the_config(library):
    assert set(statuses(chain(library, "04,06", stage_options=NONE)).values()) == {"done"}
    plan = plan_run(RunConfig(inputs=[str(library / "in")], out_dir=library / "out",
                              variants=variants.resolve_variants("04,06"), stems_from=library / "stems",
                              stage_options=NONE))
    assert {j.reason for j in plan.jobs} == {"done"}
    stem = library / "stems" / "Band" / "One" / "drums.flac"
    data, rate = sf.read(str(stem))
    sf.write(str(stem), data * 0.5, rate, subtype="PCM_24")     # the person re-separated this song
    again = chain(library, "04,06", stage_options=NONE)
    assert statuses(again) == {("Band/One.mp3", "04_stems"): "done", ("Band/One.mp3", "06_remixed"): "done",
                               ("Two.mp3", "04_stems"): "skipped", ("Two.mp3", "06_remixed"): "skipped"}
    drums, _ = read_flac(library / "out" / "04_stems" / "Band" / "One" / "drums.flac")
    assert np.max(np.abs(drums)) == pytest.approx(0.5 * np.max(np.abs(data)), rel=1e-4)
    # Demucs instead of the files is another config (here: unavailable, no weights).
    demucs = plan_run(RunConfig(inputs=[str(library / "in")], out_dir=library / "out",
                                variants=variants.resolve_variants("04,06"), models_dir=library / "no-models"))
    assert all(j.unavailable and "demucs" in j.reason for j in demucs.jobs)


def test_stem_files_are_found_in_both_naming_styles(tmp_path):
    d = tmp_path / "stems"
    for name in ("A/Song/vocals.flac", "A/Song/drums.flac", "A/Song/.hidden.flac", "A/Song/notes.txt",
                 "A/Other_(Vocals)_model_bs_roformer_ep_317_sdr_12.9755.flac", "A/Other_(No Vocals).wav",
                 "Flat_(Vocals).flac", "2_Flat_(Instrumental).flac", "Flat_(Live)_(Vocals).flac", "Flat extra_(Bass).flac"):
        (d / name).parent.mkdir(parents=True, exist_ok=True)
        (d / name).write_bytes(b"")
    found, where = find_stems(d, "A/Song.mp3")
    assert sorted(found) == ["drums", "vocals"] and where == "A/Song/<stem>"
    found, where = find_stems(d, "A/Other.mp3")
    assert sorted(found) == ["no_vocals", "vocals"] and where == "A/Other_(<Stem>)"
    found, where = find_stems(d, "B/Flat.MP3")              # not beside it: the folder's root
    assert sorted(found) == ["instrumental", "vocals"] and where == "Flat_(<Stem>)"
    assert find_stems(d, "Nope.mp3") == ({}, "")


def test_stems_from_on_the_command_line(tmp_path):
    write_mp3(tmp_path / "in" / "s.mp3", Audio(np.zeros((2, RATE), np.float32), RATE))
    proc = run_cli("run", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--stems-from", str(tmp_path / "nope"))
    assert proc.returncode == 2 and "--stems-from: no such folder" in proc.stderr
    (tmp_path / "stems").mkdir()
    proc = run_cli("run", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--stems-from", str(tmp_path / "stems"),
                   "--variants", "04,05,06", "--dry-run", "--json")
    assert proc.returncode == 0, proc.stderr
    planned = [r for r in json.loads(proc.stdout)["results"] if r["status"] == "planned"]
    assert [r["variant"] for r in planned] == ["04_stems", "05_stems_enhanced", "06_remixed"]  # no Demucs needed


# -- the stages on their own ---------------------------------------------------------------------------

def test_route_options_are_checked_and_bwe_is_the_best_engine_present(tmp_path):
    assert check_route(" Denoise , BWE ") == "denoise,bwe"
    for bad, words in (("", "give stage names"), ("none,denoise", "none stands alone"),
                       ("remix", "not a stage a stem can go through"), ("separate", "not a stage"), ("magic", "known: bwe"),
                       ("other,bwe", "other stands alone")):
        with pytest.raises(ValueError, match=words):
            check_route(bad)
    with pytest.raises(UsageError, match=r"route.vocals='denoise,remix': remix is not a stage"):
        RouteStage(StageEnv(options={"route": {"vocals": "denoise,remix"}}))
    with pytest.raises(UsageError, match=r"route.other='other'"):
        RouteStage(StageEnv(options={"route": {"other": "other"}}))
    assert RouteStage(StageEnv(options={"route": {"other": "none"}})).route_of("guitar") == ()   # follows other
    route = RouteStage(StageEnv(models_dir=tmp_path / "none"))
    assert route.route_of("vocals") == ("denoise", "offline_restore") and route.route_of("bass") == ()
    assert route.route_of("guitar") == route.route_of("piano") == route.route_of("instrumental") == ("offline_restore",)
    assert route.unavailable() is None and set(route.uses()) == {"denoise", "offline_restore"}
    picked = RouteStage(StageEnv(options={"route": {"vocals": "bwe_hifigan"}}, models_dir=tmp_path / "none"))
    assert "route.vocals needs bwe_hifigan: model hifigan-bwe is missing" in picked.unavailable()


def test_a_new_bandwidth_extension_model_changes_the_route_config(tmp_path):
    """bwe is resolved when the run is planned and the choice is in the config: installing
    HiFi-GAN+ redoes the songs whose stems went through the offline restore."""
    pytest.importorskip("torch")
    from restore.models.store import CATALOGUE
    from tests.support.random_hifigan import save_random_hifigan
    before = RouteStage(StageEnv(models_dir=tmp_path)).config()       # as a plan asks
    save_random_hifigan(tmp_path / CATALOGUE["hifigan-bwe"].filename, channels=4, stacks=1, layers=2)
    after = RouteStage(StageEnv(models_dir=tmp_path))
    assert (before["bwe"], after.bwe_engine()) == ("offline_restore", "bwe_hifigan")
    assert before != after.config() and "bwe_hifigan.model" in after.versions()
    assert after.route_of("vocals") == ("denoise", "bwe_hifigan")


def _stems(seconds=2.0, rate=RATE, names=("vocals", "drums", "bass", "other")):
    rng = np.random.default_rng(0)
    return {n: Audio((rng.standard_normal((2, int(seconds * rate))) * 0.05).astype(np.float32), rate) for n in names}


def test_six_stems_and_stems_of_other_names_take_other_s_route():
    stems = _stems(1.0, names=("drums", "bass", "other", "vocals", "guitar", "piano", "instrumental"))
    source = Audio(sum(s.samples for s in stems.values()) * np.float32(1.01), RATE)
    route = RouteStage(StageEnv(options={"route": {"vocals": "none", "other": "lowpass"}}))
    ctx = StageContext(options={"cutoff_hz": 8000}, source=source)
    out = route.process(stems, ctx)
    assert list(out) == list(stems)
    for name in ("guitar", "piano", "instrumental"):
        assert ctx.facts[f"{name}.route"] == "lowpass" and not np.array_equal(out[name].samples, stems[name].samples)
    assert np.array_equal(out["vocals"].samples, stems["vocals"].samples)
    assert np.allclose(out.residual.samples, source.samples * np.float32(0.01 / 1.01), atol=1e-6)  # kept for the remix


class To48k(Stage):
    """A stage for this test: band-limited resampling to 48 kHz, the exact length."""
    name = "to48k"

    def process(self, audio, ctx):
        from restore.analysis.blocks import resample
        from restore.audio import fit_frames
        y = resample(audio, 48000)
        return Audio(np.ascontiguousarray(fit_frames(y.samples, frames_at_rate(audio.frames, audio.rate, 48000))), 48000)


def test_the_remix_sums_at_the_highest_stem_rate_with_the_exact_length(monkeypatch):
    monkeypatch.setitem(stages._REGISTRY, "to48k", f"{__name__}:To48k")
    stems = _stems(1.3)
    for s in stems.values():  # band-limited, so that the trip to 48 kHz keeps them whole
        spec = np.fft.rfft(s.samples, axis=1)
        spec[:, np.fft.rfftfreq(s.frames, 1 / RATE) > 18000] = 0
        s.samples[:] = np.fft.irfft(spec, s.frames, axis=1)
    source = Audio(sum(s.samples for s in stems.values()), RATE)
    ctx = StageContext(source=source)
    routed = RouteStage(StageEnv(options={"route": {"vocals": "to48k", "drums": "none", "bass": "none", "other": "none"}})) \
        .process(stems, ctx)
    assert routed["vocals"].rate == 48000 and routed["drums"].rate == RATE
    out = RemixStage().process(routed, ctx)
    assert (out.rate, out.channels, out.frames) == (48000, 2, frames_at_rate(source.frames, RATE, 48000))
    from restore.analysis.blocks import resample
    expected = resample(source, 48000).samples[:, :out.frames]
    assert db(out.samples[:, 2000:-2000] - expected[:, 2000:-2000], expected) < -60
    assert ctx.facts["remix.rate"] == 48000


def test_a_remix_over_full_scale_is_scaled_and_said_not_clipped():
    stems = _stems(1.0)
    source = Audio(sum(s.samples for s in stems.values()), RATE)
    lines = []
    ctx = StageContext(source=source, log=lines.append)
    out = RemixStage(StageEnv(options={"remix": {"drums_db": "24", "guitar_db": "3"}})).process(Stems(stems), ctx)
    assert np.max(np.abs(out.samples)) == pytest.approx(1.0, abs=1e-6)
    loud = source.samples + stems["drums"].samples * np.float32(10 ** (24 / 20) - 1)
    assert ctx.facts["remix.scaled_db"] == pytest.approx(-20 * np.log10(np.max(np.abs(loud))), abs=0.01)
    assert np.allclose(out.samples, loud / np.max(np.abs(loud)), atol=1e-6)         # scaled as a whole
    assert ctx.facts["remix.unused"] == ["guitar_db"]
    assert any("scaled by" in line and "nothing clipped" in line for line in lines)
    assert any("remix.guitar_db set, but this song has no such stem" in line for line in lines)
    with pytest.raises(Exception, match="remix needs the song's decode"):
        RemixStage().process(Stems(stems), StageContext())


def test_every_new_stage_declares_its_options_for_the_readme():
    for name in ("route", "remix", "stems_from"):
        assert get_stage(name).options
    assert [o.name for o in get_stage("remix").options] == [f"{s}_db" for s in ("vocals", "drums", "bass", "other",
                                                                                 "guitar", "piano", "instrumental")]


# -- the engine with Demucs: one separation for the song, any stage after the remix ---------------------

class HalfGain(Stage):
    """An Audio -> Audio stage after the remix, as the master will be: -6.02 dB."""
    name = "half_gain"

    def process(self, audio, ctx):
        ctx.facts["half_gain"] = True
        return Audio(audio.samples * np.float32(0.5), audio.rate)


@pytest.fixture
def demucs_models(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    pytest.importorskip("demucs")
    from fractions import Fraction
    from tests.support.random_demucs import save_repo
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    save_repo(tmp_path / "models" / "demucs", "htdemucs", seed=1, segment=Fraction(2))
    yield tmp_path / "models"
    torch.set_num_threads(threads)


def test_one_separation_feeds_04_to_06_and_a_stage_after_the_remix(tmp_path, demucs_models, monkeypatch):
    from tests.support.examples import band
    from restore.stages.separate import DemucsStage
    from restore.stages.remix import RemixStage as Remix
    monkeypatch.setitem(stages._REGISTRY, "half_gain", f"{__name__}:HalfGain")
    v = variants.Variant("97_after_remix", "remix, then an Audio -> Audio stage (test)",
                         steps=("separate", "route", "remix", "half_gain"), keeps_loudness=False)
    monkeypatch.setitem(variants.VARIANTS, v.name, v)
    calls = {"separate": 0, "remix": 0}
    for cls, key in ((DemucsStage, "separate"), (Remix, "remix")):
        real = cls.process

        def counted(self, audio, ctx, real=real, key=key):
            calls[key] += 1
            return real(self, audio, ctx)
        monkeypatch.setattr(cls, "process", counted)
    write_mp3(tmp_path / "in" / "a.mp3", band(2.5, seed=1), bitrate=128)
    write_mp3(tmp_path / "in" / "b mono.mp3", band(2.0, channels=1, seed=2), bitrate=96)
    summary = run(RunConfig(inputs=[str(tmp_path / "in")], out_dir=tmp_path / "out", device="cpu", report=False,
                            variants=variants.resolve_variants("01,04,05,06,97"), models_dir=demucs_models,
                            stage_options={**NONE, "separate": {"model": "htdemucs"}}))
    assert {r.status for r in summary.results} == {"done"} and len(summary.results) == 10, summary.results
    assert calls == {"separate": 2, "remix": 2}                 # once per song, for all four variants
    assert summary.model_loads["separate"] == 1
    out = tmp_path / "out"
    for song, channels in (("a", 2), ("b mono", 1)):
        base, _ = read_flac(out / "01_baseline" / f"{song}.flac")
        remix, _ = read_flac(out / "06_remixed" / f"{song}.flac")
        after, _ = read_flac(out / "97_after_remix" / f"{song}.flac")
        assert base.shape[0] == channels and remix.shape == base.shape == after.shape
        assert db(remix - base, base) < -90          # random stems, but what they miss is added back
        assert np.max(np.abs(after - remix * 0.5)) <= 2 / 2 ** 23
        facts = marker(out, "97_after_remix", f"{song}.mp3")["stage_facts"]
        assert facts["half_gain"] is True and facts["stems_model"] == "htdemucs" and "remix.residual_db" in facts
        assert facts["remix.residual_db"] == pytest.approx(facts["stems_residual_db"], abs=0.01)
    log = (out / "_logs" / "a.log").read_text()
    assert "97_after_remix: reusing separate, route, remix from an earlier variant" in log


def test_a_stage_that_changes_the_set_of_stems_fails_the_variant(tmp_path, monkeypatch):
    class Drop(Stage):
        name = "drop"

        def process(self, stems, ctx):
            return {k: v for k, v in list(stems.items())[1:]}

    class Split(Stage):
        name = "split2"

        def process(self, audio, ctx):
            return {"a": audio, "b": Audio(audio.samples * np.float32(0), audio.rate)}
    globals().update(Drop=Drop, Split=Split)
    monkeypatch.setitem(stages._REGISTRY, "drop", f"{__name__}:Drop")
    monkeypatch.setitem(stages._REGISTRY, "split2", f"{__name__}:Split")
    ok = variants.Variant("95_split_remix", "split, remix (test)", steps=("split2", "remix"))
    bad = variants.Variant("96_drop", "split, drop a stem (test)", steps=("split2", "drop"), stems=True)
    for v in (ok, bad):
        monkeypatch.setitem(variants.VARIANTS, v.name, v)
    from tests.support.examples import band
    write_mp3(tmp_path / "in" / "s.mp3", band(1.0, seed=3), bitrate=128)
    summary = run(RunConfig(inputs=[str(tmp_path / "in")], out_dir=tmp_path / "out", report=False,
                            variants=variants.resolve_variants("01,95,96")))
    result = {r.variant: r for r in summary.results}
    assert result["95_split_remix"].status == "done"           # remix straight after a separator: residual measured
    assert result["96_drop"].status == "failed" and "changed the set of stems: a, b -> b" in result["96_drop"].reason
    base, _ = read_flac(tmp_path / "out" / "01_baseline" / "s.flac")
    assert db(read_flac(tmp_path / "out" / "95_split_remix" / "s.flac")[0] - base, base) < -90


def test_the_new_variants_are_listed_with_what_they_need(tmp_path):
    proc = run_cli("variants", "--models-dir", str(tmp_path))
    assert proc.returncode == 0
    text = proc.stderr
    for name in ("05_stems_enhanced", "06_remixed"):
        assert name in text
    assert "--stems-from DIR" in text and "routes: vocals: denoise, offline_restore; drums: offline_restore; bass: none" in text
    assert "09_denoised" in text and "not in the default set: run it by name (--variants 09)" in text
    assert not variants.VARIANTS["09_denoised"].default


def test_shared_steps_keep_only_the_longest_start_a_later_variant_needs():
    """04, 05, 06, 07 of a song: once 05 has routed the stems, the separation is let go (06
    and 07 start from the routes), and the remix is kept for 07 alone."""
    from restore.engine.song import SharedSteps
    s = ("separate",)
    chain_ = [s, s + ("route",), s + ("route", "remix"), s + ("route", "remix", "master")]
    shared = SharedSteps("decode", chain_)
    shared.keep(s, "stems", {"f": 1})
    shared.finished(chain_[0])
    assert shared.start(chain_[1]) == (1, "stems", {"f": 1})
    shared.keep(s + ("route",), "routed", {})
    assert set(shared.results) == {(), s + ("route",)}                  # the separation is no longer held
    shared.finished(chain_[1])
    assert shared.start(chain_[2])[:2] == (2, "routed")
    shared.keep(s + ("route", "remix"), "remix", {})
    assert set(shared.results) == {(), s + ("route", "remix")}
    shared.finished(chain_[2])
    assert shared.start(chain_[3])[:2] == (3, "remix")
    shared.finished(chain_[3])
    assert set(shared.results) == {()}


@needs_parts
def test_07_masters_the_remix_with_one_separation_for_04_to_07(library):
    """The whole chain by name, real stems: 07 is 06 mastered (loudness towards the target,
    under the ceiling on an independent true-peak meter), the stems read once per song,
    and the marker says what every step did."""
    pytest.importorskip("pedalboard", reason="the master extra is not installed")
    from restore.analysis.loudness import true_peak_dbtp
    summary = chain(library, "04,05,06,07")
    assert set(statuses(summary).values()) == {"done"}, summary.results
    out = library / "out"
    remix, rate = read_flac(out / "06_remixed" / "Band" / "One.flac")
    mastered, master_rate = read_flac(out / "07_mastered" / "Band" / "One.flac")
    assert (master_rate, mastered.shape) == (rate, remix.shape)
    facts = marker(out, "07_mastered", "Band/One.mp3")["stage_facts"]
    assert facts["vocals.route"] == "denoise, offline_restore" and "remix.residual_db" in facts
    master = facts["master"]
    # the cap holds within 0.05 dB (measured 2.02 on these stems: the limiter's gain is read off its
    # input and output, release included)
    assert master["target_lufs"] == -14.0 and master["limiting_db"] <= 2.0 + 0.05
    assert true_peak_dbtp(Audio(mastered.astype(np.float32), master_rate)) <= -1.0 + 0.01
    log = (out / "_logs" / "Band" / "One.log").read_text()
    assert log.count("stems_from: 4 stems") == 1
    assert "07_mastered: reusing stems_from, route, remix from an earlier variant" in log
