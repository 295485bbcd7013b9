"""The registry finds every model's family, and no family module depends on the registry."""

import ast
import importlib.util
from pathlib import Path

from common.constants import MODEL_NAMES
from prediction.registry import CHECKPOINT_FAMILY, FAMILIES, ModelRegistry


def imported_modules(module: str) -> set[str]:
    tree = ast.parse(Path(importlib.util.find_spec(module).origin).read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_every_named_model_but_dsp_has_a_family():
    assert set(FAMILIES) == set(MODEL_NAMES) - {"dsp"}


def test_family_modules_do_not_import_the_registry():
    for module in {*FAMILIES.values(), CHECKPOINT_FAMILY}:
        assert "prediction.registry" not in imported_modules(module), module


def test_a_checkpoint_path_goes_to_the_checkpoint_family(tmp_path):
    family = ModelRegistry._family(str(tmp_path / "my_model.th"))
    assert family.__name__ == CHECKPOINT_FAMILY


def test_every_named_model_has_a_card_with_a_licence(tmp_path):
    from common.config import Settings
    from prediction.catalogue import CARDS

    assert set(CARDS) == set(MODEL_NAMES)
    registry = ModelRegistry(Settings(_env_file=None, models_dir=tmp_path))
    for info in registry.infos():
        assert info.card is not None and info.card.licence, info.name
        assert info.card.published_sdr or info.card.sdr_source, info.name  # a figure or why not
    assert "non-commercial" in registry.info("umxl").card.licence
    assert registry.info("dsp").card.rtf_cpu is not None
    assert registry.info(str(tmp_path / "x.th")).card is None
