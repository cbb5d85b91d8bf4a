import pytest

from lic.scales import ARCHS, SCALES, check_choice, get_scale


def test_three_scales():
    assert set(SCALES) == {"smoke", "cpu", "paper"}
    assert get_scale("cpu").N == 64 and get_scale("cpu").M == 96
    assert get_scale("paper").pretrained and not get_scale("cpu").pretrained


def test_unknown_scale_lists_choices():
    with pytest.raises(ValueError, match="unknown scale 'gpu'.*smoke, cpu, paper"):
        get_scale("gpu")


def test_unknown_arch_lists_choices():
    with pytest.raises(ValueError, match="valid choices: " + ", ".join(ARCHS)):
        get_scale("cpu").widths("resnet")
    with pytest.raises(ValueError, match="unknown codec"):
        check_choice("codec", "png", ("jpeg", "webp"))


def test_cheng2020_has_one_width():
    assert get_scale("cpu").widths("cheng2020-attn") == {"N": 64}
    assert get_scale("cpu").widths("mbt2018") == {"N": 64, "M": 96}


def test_lambdas_are_compressai_qualities_2_to_5():
    assert get_scale("cpu").lambdas == (0.0035, 0.0067, 0.0130, 0.0250)


def test_per_architecture_schedule_overrides_the_default():
    s = get_scale("smoke").with_(arch_steps=(("cheng2020-attn", 7, 3),))
    assert s.schedule("cheng2020-attn") == (7, 3)
    assert s.schedule("mbt2018") == (s.steps, s.finetune_steps)
    with pytest.raises(ValueError, match="valid choices"):
        s.schedule("cheng2020")
