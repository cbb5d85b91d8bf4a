"""The trainers' command lines: one ``train`` sub-command, the same options, one-line errors."""
import importlib

import pytest

TRAINERS = ["zoo", "yin", "tao", "yu"]


@pytest.mark.parametrize("module", TRAINERS)
def test_every_trainer_takes_the_same_options(module, capsys):
    main = importlib.import_module(f"lic.{module}").main
    with pytest.raises(SystemExit) as e:
        main(["train", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for option in ("--scale", "--data", "--precision"):
        assert option in out


@pytest.mark.parametrize("module", ["zoo", "tao"])
def test_a_lambda_outside_the_scale_is_a_one_line_error(module, capsys):
    main = importlib.import_module(f"lic.{module}").main
    with pytest.raises(SystemExit) as e:
        main(["train", "--scale", "smoke", "--lmbda", "0.5"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "λ=0.5 is not a λ of scale smoke; valid: 0.0067, 0.025" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("module", TRAINERS)
def test_a_bad_precision_is_refused_before_any_work(module, capsys):
    main = importlib.import_module(f"lic.{module}").main
    with pytest.raises(SystemExit) as e:
        main(["train", "--scale", "smoke", "--precision", "fp16"])
    assert e.value.code == 2 and "invalid choice: 'fp16'" in capsys.readouterr().err
