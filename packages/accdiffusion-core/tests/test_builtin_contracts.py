"""The core's own stages (schedules ``paper`` and ``fast``, structure guidances
``none`` and ``controlnet``) against the stage contracts of the test kit."""

import pytest
from accdiffusion import Settings, SettingsError
from accdiffusion.builtins import BUILTINS
from accdiffusion.schedules import FastSchedule, PaperSchedule
from accdiffusion.structure import ControlNetGuidance, NoStructureGuidance
from accdiffusion_testing.kit import ScheduleContract, StructureGuidanceContract, host_with


class TestPaperScheduleContract(ScheduleContract):
    plugin = BUILTINS
    name = "paper"


class TestFastScheduleContract(ScheduleContract):
    plugin = BUILTINS
    name = "fast"

    def test_the_object_is_the_fast_schedule(self):
        assert self.make() == FastSchedule()


class TestFastScheduleOptionsContract(ScheduleContract):
    plugin = BUILTINS
    name = "fast"
    options = {"start_fraction": "0.5", "skip_residual": "false"}
    bad_values = {"start_fraction": [1.0, -0.01]}

    def test_the_options_reach_the_object(self):
        assert self.make() == FastSchedule(start_fraction=0.5, skip_residual=False)


class TestNoStructureGuidanceContract(StructureGuidanceContract):
    plugin = BUILTINS
    name = "none"

    def test_no_control_and_no_pictures(self):
        from accdiffusion_testing.kit import structure_request

        obj = self.make()
        assert isinstance(obj, NoStructureGuidance)
        assert obj.control(structure_request()) is None and obj.pictures() == ()


class TestControlNetGuidanceContract(StructureGuidanceContract):
    """Without a ControlNet: prepare refuses (SettingsError), the control images are made all the same."""

    plugin = BUILTINS
    name = "controlnet"
    bad_values = {"image": ["/no/such/control.png"], "start": [1.0]}  # refused when built: no file, start = end


class TestControlNetGuidanceOptionsContract(StructureGuidanceContract):
    plugin = BUILTINS
    name = "controlnet"
    options = {"canny_sigma": 0.5, "scale": 0.8, "start": 0.2, "end": 0.9}

    def test_the_options_reach_the_control_views(self):
        from accdiffusion_testing.kit import structure_request

        obj = self.make()
        assert obj == ControlNetGuidance(canny_sigma=0.5, scale=0.8, start=0.2, end=0.9)
        views = obj.control(structure_request())
        assert (views.scale, views.start, views.end) == (0.8, 0.2, 0.9)


def test_paper_is_every_step_from_noise():
    from accdiffusion_testing.kit import schedule_request

    assert PaperSchedule().plan(schedule_request((2, 3), 7)) == PaperSchedule().plan(schedule_request((2, 3), 7))


def test_a_missing_control_image_is_refused_by_check_options():
    settings = Settings(prompt="x", plugin_options={"controlnet.image": "/no/such/control.png"})
    with pytest.raises(SettingsError, match="controlnet.image"):
        host_with().check_options(settings, {"structure_guidance": "controlnet"})
    crossed = Settings(prompt="x", plugin_options={"controlnet.start": 0.8, "controlnet.end": 0.5})
    with pytest.raises(SettingsError, match=r"option controlnet.start=0.8 with end=0.5 is not allowed: start must "
                                            r"be below end \(the structure_guidance 'controlnet' from plugin "
                                            r"'accdiffusion.builtins' \(distribution 'accdiffusion-core'\)\)"):
        host_with().check_options(crossed, {"structure_guidance": "controlnet"})
