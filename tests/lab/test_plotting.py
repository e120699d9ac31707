"""Labels and colours of the weighting schemes, parameterised names included."""

import pytest

from dmcore.lab import plotting


def test_a_parameterised_name_takes_its_familys_label_and_colour():
    assert plotting.label("sce") == "SCE" and plotting.label("sce:A=-4") == "SCE (A=-4)"
    assert plotting.color("nce+rce:A=-4") == plotting.color("nce+rce")
    assert plotting.label("normal:psi=0.25,beta=8") == "normal:psi=0.25,beta=8"
    with pytest.raises(KeyError, match="no colour for 'hinge'"):
        plotting.color("hinge")
