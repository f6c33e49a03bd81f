#!/usr/bin/python3
"""boxbuild's stash and stackbuild, in the box (docs/stash.md).

    python3 /boxbuild-stash/stash-in-box.py BUILDER [ARGS...]

boxbuild puts this file and plan.json into a share of its own ($BOXBUILD_STASH_WORK).
plan.json says what to do around the box's kiwi builder (boxbuild-kiwi):

- "stash": run the builder; when the build succeeded, store kiwi's image root tree (on the
  scratch disk) as version TAG of stash NAME: unpack the newest version (read from the
  host's layout, shared read-only), rsync the root over it, and repack: one new layer.
  Only the new blobs and result.json go to "out"; the host puts them into its layout.
- "stackbuild": unpack the stashes in the given order into kiwi's image root, then run
  `kiwi-ng system build --allow-existing-root` with a description, or `kiwi-ng system
  create` on the root (with the description stored in it, image/config.xml) without one,
  and bundle the results as boxbuild-kiwi does.

The layer, config and history are kiwi's own (`kiwi-ng system stash`,
kiwi.stackbuild.defaults), so stashes of boxbuild and of kiwi are interchangeable.
"""
import datetime
import importlib.machinery
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET

# kiwi.defaults.Defaults.get_preparer() and StackBuildDefaults, kiwi 11.
PREPARER = "KIWI - https://github.com/OSInside/kiwi"
COMMENT = "KIWI Root Tree Stash"
EXCLUDE = ["dev/*", "sys/*", "proc/*"]
# kiwi.defaults.Defaults.get_sync_options()
SYNC = ["--archive", "--hard-links", "--xattrs", "--acls", "--one-file-system", "--inplace"]
REF = "org.opencontainers.image.ref.name"


class Failed(Exception):
    pass


def say(message):
    print("boxbuild-stash: " + message, file=sys.stderr, flush=True)


def run(argv):
    code = subprocess.run(argv, stdout=sys.stderr).returncode
    if code != 0:
        raise Failed("%s failed with exit code %d" % (argv[0], code))


def blob(layout, digest):
    return os.path.join(layout, "blobs", "sha256", digest.split(":", 1)[1])


def read_json(path):
    with open(path, "rb") as f:
        return json.load(f)


def write_json(path, value):
    with open(path, "w") as f:
        json.dump(value, f)


def manifest_blobs(layout, digest):
    """The manifest's own digest, its config's and its layers'."""
    manifest = read_json(blob(layout, digest))
    return [digest, manifest["config"]["digest"]] + [l["digest"] for l in manifest["layers"]]


def scratch_layout(path, source, manifest, ref):
    """An OCI layout on the scratch disk holding one manifest of `source` as `ref`."""
    os.makedirs(os.path.join(path, "blobs", "sha256"))
    write_json(os.path.join(path, "oci-layout"), {"imageLayoutVersion": "1.0.0"})
    for digest in manifest_blobs(source, manifest):
        shutil.copyfile(blob(source, digest), blob(path, digest))
    write_json(os.path.join(path, "index.json"), {
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest,
            "size": os.path.getsize(blob(path, manifest)),
            "annotations": {REF: ref},
        }],
    })


def author_of(root):
    try:
        tree = ET.parse(os.path.join(root, "image", "config.xml"))
        for description in tree.getroot().iter("description"):
            author = description.findtext("author")
            if author:
                return author.strip()
    except (OSError, ET.ParseError):
        pass
    return ""


def created():
    sde = os.environ.get("SOURCE_DATE_EPOCH")
    when = (datetime.datetime.fromtimestamp(int(sde), tz=datetime.timezone.utc) if sde
            else datetime.datetime.now(datetime.timezone.utc))
    return when.strftime("%Y-%m-%dT%H:%M:%S+00:00")


def stash(plan, root, work):
    name, tag = plan["name"], plan["tag"]
    if not os.path.isfile(os.path.join(root, "image", "config.xml")):
        raise Failed("%s holds no image/config.xml: not a kiwi image root" % root)
    layout = os.path.join(work, "layout")
    bundle = os.path.join(work, "bundle")
    shutil.rmtree(work, ignore_errors=True)
    base = plan.get("base")
    if base:
        say("stash %s:%s: a new layer on %s" % (name, tag, base["manifest"]))
        scratch_layout(layout, base["layout"], base["manifest"], "base")
    else:
        say("stash %s:%s: the first layer" % (name, tag))
        os.makedirs(work)
        run(["umoci", "init", "--layout", layout])
        run(["umoci", "new", "--image", layout + ":base"])
    run(["umoci", "unpack", "--image", layout + ":base", bundle])
    excludes = []
    for item in EXCLUDE:
        excludes += ["--exclude", "/" + item]
    run(["rsync"] + SYNC + ["--delete"] + excludes
        + [root.rstrip("/") + "/", os.path.join(bundle, "rootfs") + "/"])
    author, date = author_of(root), created()
    run(["umoci", "repack", "--history.comment=" + COMMENT, "--history.created_by=" + PREPARER,
         "--history.author=" + author, "--history.created", date,
         "--image", layout + ":base", bundle])
    run(["umoci", "config", "--config.entrypoint=/bin/sh",
         "--config.label=io.osinside.kiwi.maintainer=" + author,
         "--config.label=io.osinside.kiwi.meta=" + PREPARER,
         "--no-history", "--image", layout + ":base", "--tag", tag, "--created", date])
    index = read_json(os.path.join(layout, "index.json"))
    entry = [m for m in index["manifests"] if m.get("annotations", {}).get(REF) == tag][0]
    out = plan["out"]
    os.makedirs(os.path.join(out, "blobs", "sha256"), exist_ok=True)
    sent = 0
    for digest in manifest_blobs(layout, entry["digest"]):
        if base and os.path.isfile(blob(base["layout"], digest)):
            continue
        shutil.copyfile(blob(layout, digest), blob(out, digest))
        sent += os.path.getsize(blob(out, digest))
    write_json(os.path.join(out, "result.json"), {"manifest": {
        "mediaType": entry["mediaType"], "digest": entry["digest"], "size": entry["size"]}})
    say("stash %s:%s is %s (%d bytes of new blobs)" % (name, tag, entry["digest"], sent))
    shutil.rmtree(work, ignore_errors=True)


def stack(plan, image_root, work):
    os.makedirs(image_root)
    os.makedirs(work, exist_ok=True)
    for i, item in enumerate(plan["stashes"]):
        layout = os.path.join(work, "layout-%d" % i)
        bundle = os.path.join(work, "bundle-%d" % i)
        if "archive" in item:
            say("stash %s (oci-archive of kiwi-ng system stash)" % item["ref"])
            run(["skopeo", "copy", "oci-archive:%s:%s" % (item["archive"], item["ref"]),
                 "oci:%s:stash" % layout])
        else:
            say("stash %s (%s)" % (item["ref"], item["manifest"]))
            scratch_layout(layout, item["layout"], item["manifest"], "stash")
        run(["umoci", "unpack", "--image", layout + ":stash", bundle])
        run(["rsync"] + SYNC + [os.path.join(bundle, "rootfs") + "/", image_root + "/"])
        shutil.rmtree(layout)
        shutil.rmtree(bundle)


def builder_module(path):
    loader = importlib.machinery.SourceFileLoader("boxbuild_kiwi", path)
    spec = importlib.util.spec_from_loader("boxbuild_kiwi", loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def main():
    builder = sys.argv[1:]
    with open(os.environ["BOXBUILD_STASH_PLAN"]) as f:
        plan = json.load(f)
    scratch = os.environ.get("BOXBUILD_SCRATCH", "/var/tmp")
    kiwi_target = os.path.join(scratch, "kiwi-target")
    image_root = os.path.join(kiwi_target, "build", "image-root")
    work = os.path.join(scratch, "boxbuild-stash")
    try:
        if plan["mode"] == "stash":
            if plan.get("root"):
                image_root = plan["root"]
            else:
                code = subprocess.run(builder).returncode
                if code != 0:
                    return code
            stash(plan, image_root, work)
            return 0
        stack(plan, image_root, work)
        if plan.get("description"):
            return subprocess.run(builder + ["--allow-existing-root"]).returncode
        # No description: kiwi-ng system create on the stacked root, then the bundle, as
        # boxbuild-kiwi does for a build.
        bk = builder_module(builder[0])
        globals_, build, bundle_id = bk.split_args(builder[1:])
        subprocess.run(["modprobe", "-q", "-a"] + bk.MODULES, stderr=subprocess.DEVNULL)
        kiwi = bk.kiwi_for_this_run(scratch)
        code = subprocess.run([kiwi] + globals_ + ["system", "create", "--root", image_root,
                                                   "--target-dir", kiwi_target] + build).returncode
        if code != 0:
            say("kiwi-ng system create failed with exit code %d" % code)
            return code
        code = subprocess.run([kiwi, "result", "bundle", "--target-dir", kiwi_target,
                               "--bundle-dir", os.environ.get("BOXBUILD_TARGET", "/target"),
                               "--id", bundle_id]).returncode
        if code != 0:
            say("kiwi-ng result bundle failed with exit code %d" % code)
        return code
    except (Failed, OSError, KeyError, IndexError, ValueError) as e:
        say("%s failed: %s" % (plan.get("mode"), e))
        return 1


if __name__ == "__main__":
    sys.exit(main())
