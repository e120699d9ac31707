"""The one reader of the papers' published tables (book/data/paper/*.csv)."""

import pytest

from dmcore.lab import papers


def test_papers_read_skips_the_caption_and_filters(tmp_path):
    (tmp_path / "t.csv").write_text("# Table 1 of a paper\n# a note\nnoise,method,acc\n0.2,CCE,80.1\n0.2,DM,\n"
                                    "0.4,CCE,70.0\n")
    assert papers.names(tmp_path) == ["t.csv"]
    assert papers.caption("t.csv", tmp_path) == "Table 1 of a paper\na note"
    assert papers.read("t.csv", tmp_path) == [{"noise": "0.2", "method": "CCE", "acc": "80.1"},
                                              {"noise": "0.2", "method": "DM", "acc": ""},
                                              {"noise": "0.4", "method": "CCE", "acc": "70.0"}]
    assert [r["acc"] for r in papers.read("t.csv", tmp_path, method="CCE")] == ["80.1", "70.0"]
    with pytest.raises(KeyError, match="no column"):
        papers.read("t.csv", tmp_path, rate="0.2")
    with pytest.raises(FileNotFoundError, match="no table"):
        papers.read("missing.csv", tmp_path)


def test_papers_folder_is_found_from_the_checkout_or_the_book(root, monkeypatch):
    monkeypatch.delenv("DMCORE_PAPERS", raising=False)
    for cwd in (root, root / "book"):
        monkeypatch.chdir(cwd)
        assert papers.folder().resolve() == root / "book" / "data" / "paper"
    table9 = papers.read("cifar10_resnet56_dm_table9.csv", noise="0.6")
    assert [r["method"] for r in table9] == ["CCE", "DM"]
