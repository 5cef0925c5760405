"""DVC stage `sources`: a content fingerprint of each data folder the pipeline reads from outside
the project -> data/sources/{data,against,external}.json, which the later stages depend on, and of
an ensemble's member folders -> data/sources/members.json.

Why not `${data.root}` as a dependency: DVC resolves a relative path outside the repository inside
its temporary copy when it runs a queued experiment, and fails there. This stage always runs
(`always_changed`), reads the folders from the project root, and the stages after it re-run only
when a fingerprint changes."""

from skin_cancer import paths
from skin_cancer.config import resolve_from_project
from skin_cancer.io import folder_fingerprint, write_json
from skin_cancer.schema import Config
from skin_cancer.stages import run_stage


def main(cfg: Config) -> None:
    groups = {
        paths.SOURCE_DATA: {"data": cfg.data.root, **{name: spec.root for name, spec in cfg.data.sources.items()}},
        paths.SOURCE_AGAINST: {name: spec.root for name, spec in cfg.audit.against.items()},
        paths.SOURCE_EXTERNAL: {name: spec.root for name, spec in cfg.evaluate.external.items()},
        paths.SOURCE_MEMBERS: {f"member_{i}": folder for i, folder in enumerate(cfg.model.members)},
    }
    for path, roots in groups.items():
        write_json(path, {name: folder_fingerprint(resolve_from_project(root)) for name, root in sorted(roots.items())})
        print(f"sources: {path}: {', '.join(sorted(roots)) or 'none'}")


if __name__ == "__main__":
    run_stage(main)
