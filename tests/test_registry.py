"""One list of anonymization methods (anoncam/registry.py) feeds the config schema, the CLI, the eval,
and MQTT/Home Assistant; each entry's needs are real."""
import json
import subprocess
import sys

from anoncam import assets, registry
from anoncam.anonymize.methods import METHODS
from anoncam.config import AnonymizeConfig
from conftest import ANONCAM


def test_every_consumer_reads_the_registry():
    from anoncam import cli
    from anoncam.eval import DEFAULT_METHODS, known_methods
    names = list(registry.names())
    assert names == ["blur", "pixelate", "solid", "generative"]
    schema = json.loads(subprocess.run([*ANONCAM, "config", "schema"], capture_output=True, text=True,
                                       check=True).stdout)
    enum = json.dumps(schema)
    for n in names:
        assert f'"{n}"' in enum
    assert cli.METHODS == names and list(DEFAULT_METHODS) == names
    assert known_methods()[1:] == names
    assert list(METHODS) == names
    from anoncam.control import available_methods  # MQTT commands and Home Assistant's select
    assert available_methods() == names


def test_reading_the_names_imports_no_method():
    code = ("import sys; from anoncam import config, registry; from anoncam.anonymize.methods import METHODS; "
            "assert 'generative' in METHODS; print('anoncam.anonymize.generative' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_each_entry_states_real_needs():
    manifest = assets.load_manifest("models")
    for name, spec in registry.SPECS.items():
        assert spec.mask_scale_field in AnonymizeConfig.model_fields, name
        assert all(m in manifest for m in spec.models), name
        assert callable(METHODS[name])


def test_unknown_method_is_named():
    import pytest
    with pytest.raises(KeyError, match="nope"):
        registry.spec("nope")
