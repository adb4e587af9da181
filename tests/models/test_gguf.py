"""The GGUF → HF converter's command line (conversion itself: tests/real_checkpoints.py)."""

from deepalign_jax.models import gguf


def test_missing_gguf_file_is_reported(tmp_path, capsys):
  assert gguf.main([f"--config.gguf={tmp_path / 'nope.gguf'}", f"--config.out={tmp_path / 'out'}"]) == 1
  assert f"{tmp_path / 'nope.gguf'}: no such GGUF file" in capsys.readouterr().err
  assert not (tmp_path / "out").exists()


def test_existing_output_is_not_overwritten_by_default(tmp_path, capsys):
  source = tmp_path / "model.gguf"
  source.write_bytes(b"GGUF")
  (tmp_path / "out").mkdir()
  (tmp_path / "out" / "keep.txt").write_text("precious")
  assert gguf.main([f"--config.gguf={source}", f"--config.out={tmp_path / 'out'}"]) == 1
  assert "exists; pass overwrite=True / --config.overwrite=True" in capsys.readouterr().err
  assert (tmp_path / "out" / "keep.txt").read_text() == "precious"


def test_packaged_checkpoint_converts_once_into_the_cache(monkeypatch, tmp_path):
  monkeypatch.setenv("DEEPALIGN_CHECKPOINTS", str(tmp_path))
  calls = []
  monkeypatch.setattr(gguf, "packaged_gguf_path", lambda name: tmp_path / f"{name}.gguf")

  def fake_convert(source, out):
    calls.append(source)
    out.mkdir(parents=True)
    (out / "config.json").write_text("{}")
    return out

  monkeypatch.setattr(gguf, "convert_gguf", fake_convert)
  first = gguf.packaged_checkpoint("smollm2")
  second = gguf.packaged_checkpoint("smollm2")
  assert first == second == tmp_path / "smollm2"
  assert calls == [tmp_path / "smollm2.gguf"]


def test_exactly_one_source_is_asked_for(tmp_path, capsys):
  assert gguf.main([f"--config.out={tmp_path / 'out'}"]) == 1
  assert "give exactly one of config.gguf (a file) and config.package" in capsys.readouterr().err
  assert gguf.main(["--config.package=llama-7b", f"--config.out={tmp_path / 'out'}"]) == 1
  assert "config.package='llama-7b': expected one of smollm2, gemma3-270m" in capsys.readouterr().err
