"""`prepare`: flat ImageNet val + devkit ground truth -> val/<wnid>/ folders."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from visionforge_resnet.devkit import DevkitError
from visionforge_resnet.prepare import arrange_validation, load_ground_truth
from visionforge_resnet.tinydata import TinyImageNet, make_tiny_imagenet


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyImageNet:
    root = tmp_path_factory.mktemp("tiny")
    return make_tiny_imagenet(
        root, num_classes=4, train_per_class=1, val_per_class=3, flat_val=True
    )


def _truth_from_loc(tiny: TinyImageNet) -> dict[str, str]:
    """The ground truth written independently of the readers: the CSV's first tokens."""
    rows = tiny.loc_solution.read_text().splitlines()[1:]
    return {row.split(",")[0]: row.split(",")[1].split()[0] for row in rows}


def _arranged(out: Path) -> dict[str, str]:
    return {p.stem: p.parent.name for p in out.glob("*/*.JPEG")}


@pytest.mark.parametrize("form", ["csv", "csv_no_mapping", "devkit_dir", "meta_mat", "synset_txt"])
def test_every_form_puts_each_image_in_its_class_folder(
    tiny: TinyImageNet, tmp_path: Path, form: str
) -> None:
    data = tiny.devkit / "data"
    truth_txt = data / "ILSVRC2012_validation_ground_truth.txt"
    if form == "synset_txt":
        from visionforge_resnet.devkit import read_meta_mat

        listing = tmp_path / "synsets.txt"
        listing.write_text("".join(f"{w} words\n" for w in read_meta_mat(data / "meta.mat")))
    kwargs = {
        "csv": {"loc_solution": tiny.loc_solution, "synset_mapping": tiny.synset_mapping},
        "csv_no_mapping": {"loc_solution": tiny.loc_solution},
        "devkit_dir": {"devkit_dir": tiny.devkit},
        "meta_mat": {"ground_truth": truth_txt, "synsets": data / "meta.mat"},
        "synset_txt": {"ground_truth": truth_txt, "synsets": tmp_path / "synsets.txt"},
    }[form]
    truth = load_ground_truth(**kwargs)
    result = arrange_validation(tiny.val_flat, tmp_path / "val", truth, progress=False)
    expected = _truth_from_loc(tiny)
    assert _arranged(tmp_path / "val") == expected
    assert result.num_images == 12
    assert result.images_per_class == dict.fromkeys(tiny.wnids, 3)
    assert result.classes_without_images == []
    assert len(list(tiny.val_flat.iterdir())) == 12  # copy mode leaves the source alone


def test_meta_mat_skips_parent_synsets_and_keeps_id_order(tiny: TinyImageNet) -> None:
    from visionforge_resnet.devkit import read_meta_mat

    wnids = read_meta_mat(tiny.devkit / "data" / "meta.mat")
    assert sorted(wnids) == tiny.wnids
    assert "n99999999" not in wnids  # the generated parent synset


@pytest.mark.parametrize("mode", ["symlink", "hardlink", "move"])
def test_modes(tiny: TinyImageNet, tmp_path: Path, mode: str) -> None:
    source = tmp_path / "flat"
    shutil.copytree(tiny.val_flat, source)
    truth = load_ground_truth(loc_solution=tiny.loc_solution)
    arrange_validation(source, tmp_path / "val", truth, mode=mode, progress=False)  # type: ignore[arg-type]
    placed = sorted((tmp_path / "val").glob("*/*.JPEG"))
    assert len(placed) == 12
    assert all(p.is_symlink() == (mode == "symlink") for p in placed)
    assert all(p.read_bytes()[:2] == b"\xff\xd8" for p in placed)  # JPEG magic, link resolves
    assert len(list(source.iterdir())) == (0 if mode == "move" else 12)


def test_missing_image_is_named(tiny: TinyImageNet, tmp_path: Path) -> None:
    source = tmp_path / "flat"
    shutil.copytree(tiny.val_flat, source)
    (source / "ILSVRC2012_val_00000007.JPEG").unlink()
    truth = load_ground_truth(devkit_dir=tiny.devkit)
    with pytest.raises(DevkitError, match=r"1 image\(s\) .* missing \(ILSVRC2012_val_00000007\)"):
        arrange_validation(source, tmp_path / "val", truth, progress=False)
    assert not (tmp_path / "val").exists()
    assert not (tmp_path / ".val.partial").exists()


def test_unlisted_image_is_an_error(tiny: TinyImageNet, tmp_path: Path) -> None:
    source = tmp_path / "flat"
    shutil.copytree(tiny.val_flat, source)
    shutil.copy(source / "ILSVRC2012_val_00000001.JPEG", source / "ILSVRC2012_val_00000099.JPEG")
    truth = load_ground_truth(loc_solution=tiny.loc_solution)
    with pytest.raises(DevkitError, match="ILSVRC2012_val_00000099.*right ground-truth file"):
        arrange_validation(source, tmp_path / "val", truth, progress=False)


def test_existing_output_and_leftover_partial_are_refused(
    tiny: TinyImageNet, tmp_path: Path
) -> None:
    truth = load_ground_truth(loc_solution=tiny.loc_solution)
    (tmp_path / "val").mkdir()
    (tmp_path / "val" / "keep.txt").write_text("x")
    with pytest.raises(DevkitError, match="not empty"):
        arrange_validation(tiny.val_flat, tmp_path / "val", truth, progress=False)
    (tmp_path / ".other.partial").mkdir()
    with pytest.raises(DevkitError, match="interrupted run"):
        arrange_validation(tiny.val_flat, tmp_path / "other", truth, progress=False)


def test_malformed_files_name_file_and_line(tmp_path: Path) -> None:
    csv_file = tmp_path / "LOC_val_solution.csv"
    csv_file.write_text("ImageId,PredictionString\nILSVRC2012_val_00000001,dog 1 2 3 4\n")
    with pytest.raises(DevkitError, match=r"LOC_val_solution.csv:2: 'dog' is not a WordNet id"):
        load_ground_truth(loc_solution=csv_file)
    csv_file.write_text("id,label\n")
    with pytest.raises(DevkitError, match=r"LOC_val_solution.csv:1: expected the header"):
        load_ground_truth(loc_solution=csv_file)
    mapping = tmp_path / "LOC_synset_mapping.txt"
    mapping.write_text("n01440764 tench\n")
    csv_file.write_text("ImageId,PredictionString\nILSVRC2012_val_00000001,n01443537 1 2 3 4\n")
    with pytest.raises(DevkitError, match=r":2: n01443537 is not in the synset mapping"):
        load_ground_truth(loc_solution=csv_file, synset_mapping=mapping)
    truth = tmp_path / "gt.txt"
    truth.write_text("1\n2\n")
    with pytest.raises(DevkitError, match=r"gt.txt:2: expected a class id in 1..1, got '2'"):
        load_ground_truth(ground_truth=truth, synsets=mapping)
    with pytest.raises(DevkitError, match="meta.mat not found"):
        load_ground_truth(ground_truth=truth, synsets=tmp_path / "meta.mat")
    (tmp_path / "bad.mat").write_bytes(b"not a mat file")
    with pytest.raises(DevkitError, match="bad.mat: not a devkit meta.mat"):
        load_ground_truth(ground_truth=truth, synsets=tmp_path / "bad.mat")


def test_sorted_1000_synsets_are_refused_for_devkit_ids(tmp_path: Path) -> None:
    listing = tmp_path / "LOC_synset_mapping.txt"
    listing.write_text("".join(f"n{i:08d} x\n" for i in range(1000)))
    truth = tmp_path / "gt.txt"
    truth.write_text("1\n")
    with pytest.raises(DevkitError, match="sorted order .* pass the devkit's data/meta.mat"):
        load_ground_truth(ground_truth=truth, synsets=listing)


def test_ground_truth_arguments(tmp_path: Path) -> None:
    with pytest.raises(DevkitError, match="no ground truth given"):
        load_ground_truth()
    with pytest.raises(DevkitError, match="not both"):
        load_ground_truth(loc_solution=tmp_path / "a.csv", devkit_dir=tmp_path)
    with pytest.raises(DevkitError, match="LOC_val_solution.csv not found"):
        load_ground_truth(loc_solution=tmp_path / "missing.csv")
