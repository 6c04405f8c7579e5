"""`stpn build-dataset`: a public I3D feature release + annotations -> a dataset directory of TFRecords."""

from __future__ import annotations

from absl import flags

from stpn_tf.cli.common import Command, Parsed, require


def define(fv: flags.FlagValues) -> None:
    from stpn_tf.data.features import LAYOUTS

    flags.DEFINE_enum("layout", None, sorted(LAYOUTS), "the release's layout (required)", flag_values=fv)
    flags.DEFINE_string("annotations", None, "annotation JSON (ActivityNet, BaS-Net gt.json), Thumos14reduced "
                        "folder or THUMOS14 toolkit folder, e.g. stpn:thumos14/thumos14reduced (required)",
                        flag_values=fv)
    flags.DEFINE_string("features", None, "feature file or folder of the release (required)", flag_values=fv)
    flags.DEFINE_string("out", None, "dataset directory to create or rebuild (required)", flag_values=fv)
    flags.DEFINE_string("dataset_name", None, "name stored in dataset.json (default the layout's family)",
                        flag_values=fv)
    flags.DEFINE_bool("allow_pickle", False, "allow loading numpy object arrays (Thumos14reduced); pickle can run "
                      "arbitrary code: only for files you trust", flag_values=fv)
    flags.DEFINE_bool("strict", False, "fail on any warning (skipped video, trimmed length, clipped segment) "
                      "instead of counting it", flag_values=fv)
    flags.DEFINE_integer("num_shards", None, "shards per split (default about one per 200 videos, at least 4)",
                         flag_values=fv)
    flags.DEFINE_list("exclude_videos", [], "video ids to leave out", flag_values=fv)
    flags.DEFINE_bool("thumos14_210", False, "the 210-video THUMOS14 test set (without videos 270 and 1496)",
                      flag_values=fv)
    flags.DEFINE_integer("feature_dim", None, "expected feature size per stream (default: the first video's)",
                         flag_values=fv)
    flags.DEFINE_string("durations", None, "Thumos14reduced folder to take durations from (for annotations "
                        "without them), e.g. stpn:thumos14/thumos14reduced", flag_values=fv)
    flags.DEFINE_string("classes", None, "class list file, one name per line or a JSON list (default THUMOS14's "
                        "20, or ActivityNet's taxonomy)", flag_values=fv)
    flags.DEFINE_float("fps", None, "frame rate of the features when they carry none (default 25)", flag_values=fv)
    flags.DEFINE_integer("stride_frames", None, "frames per snippet when the features carry none (default 16)",
                         flag_values=fv)
    flags.DEFINE_enum("segments_outside", "clip", ["clip", "keep"], "segments past the video's duration: clip "
                      "them, or keep them as annotated", flag_values=fv)
    flags.DEFINE_bool("keep_unlabeled", False, "keep annotated videos without action segments", flag_values=fv)
    flags.DEFINE_enum("snippet_time", "fixed", ["fixed", "duration"], "fixed: a snippet is stride_frames / fps "
                      "seconds; duration: video duration / snippets (releases resampled to a fixed number of "
                      "snippets per video, common for ActivityNet)", flag_values=fv)
    flags.DEFINE_enum("storage", "by_stream", ["by_stream", "combined"], "TFRecord storage: each stream in its own "
                      "shards (training one stream reads half the bytes), or one record per video holding both "
                      "streams (earlier builds)", flag_values=fv)


def run(p: Parsed) -> int:
    from stpn_tf.data.build import run_build_dataset

    require(p.flags, "layout", "annotations", "features", "out")
    return run_build_dataset(
        layout=p.layout, annotations=p.path("annotations"), features=p.path("features"), out=p.out,
        dataset_name=p.dataset_name, allow_pickle=p.allow_pickle, strict=p.strict, num_shards=p.num_shards,
        exclude_videos=p.exclude_videos, thumos14_210=p.thumos14_210, feature_dim=p.feature_dim,
        durations=p.path("durations"), classes=p.path("classes"), fps=p.fps, stride_frames=p.stride_frames,
        segments_outside=p.segments_outside, keep_unlabeled=p.keep_unlabeled, snippet_time=p.snippet_time,
        storage=p.storage)


COMMAND = Command(
    name="build-dataset", purpose="public I3D feature releases + annotations -> TFRecord shards, dataset.json, "
                                  "ground_truth.json",
    usage="stpn build-dataset --layout=L --annotations=A --features=F --out=DIR [flags]",
    define=define, run=run,
    details="Layouts: thumos14_reduced (the W-TALC joint .npy; needs --allow_pickle), thumos14_npy (BaS-Net\n"
            "features/{train,test}/{rgb,flow}/<video>.npy), thumos14_h5, activitynet_h5, activitynet_npy.\n"
            "Re-running with the same inputs gives byte-identical outputs; a failed build leaves the old\n"
            "dataset as it was.")
