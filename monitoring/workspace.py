"""The Evidently workspace ops teams open with `evidently ui`: one project per
deployment target (`serving`, `cohort-<name>`), each drift check (and each check of
delayed labels) a snapshot, and a dashboard per project (drift share and drifted
columns over time, predicted class shares, data quality, the champion's accuracy on
delayed labels)."""

from __future__ import annotations

from pathlib import Path

from evidently.core.report import Snapshot
from evidently.sdk.models import PanelMetric
from evidently.sdk.panels import counter_panel, line_plot_panel
from evidently.ui.workspace import Project, Workspace


def open_workspace(path: Path) -> Workspace:
    path.mkdir(parents=True, exist_ok=True)
    return Workspace(str(path))


def project_for(workspace: Workspace, target: str) -> Project:
    """The target's project, created with its dashboard the first time."""
    found = workspace.search_project(target)
    if found:
        return found[0]
    project = workspace.create_project(
        target, description=f"edgeloop drift checks for {target}"
    )
    for panel in dashboard_panels():
        project.dashboard.add_panel(panel)
    return project


def dashboard_panels() -> list:
    """Drift (share and count, last and over time), predicted class shares, data
    quality, rows, and the champion's accuracy on delayed labels."""
    share = PanelMetric(
        legend="drifted share",
        metric="DriftedColumnsCount",
        metric_labels={"value_type": "share"},
    )
    count = PanelMetric(
        legend="drifted columns",
        metric="DriftedColumnsCount",
        metric_labels={"value_type": "count"},
    )
    classes = [
        # serving: the predicted class; devices: mean share per class
        PanelMetric(
            legend="share",
            metric="UniqueValueCount",
            metric_labels={"value_type": "share"},
        ),
        PanelMetric(legend="mean share", metric="MeanValue"),
    ]
    missing = PanelMetric(
        legend="missing share",
        metric="DatasetMissingValueCount",
        metric_labels={"value_type": "share"},
    )
    return [
        counter_panel(title="Drifted share, last check", values=[share], size="half"),
        counter_panel(title="Drifted columns, last check", values=[count], size="half"),
        line_plot_panel(title="Drifted share over time", values=[share]),
        line_plot_panel(title="Drifted columns over time", values=[count]),
        line_plot_panel(title="Predicted class shares over time", values=classes),
        line_plot_panel(
            title="Data quality: missing values share", values=[missing], size="half"
        ),
        counter_panel(
            title="Rows in the last window",
            values=[PanelMetric(legend="rows", metric="RowCount")],
            size="half",
        ),
        line_plot_panel(
            title="Champion's accuracy on delayed labels",
            values=[PanelMetric(legend="accuracy", metric="Accuracy")],
        ),
    ]


def save(workspace: Workspace, target: str, snapshot: Snapshot) -> str:
    project = project_for(workspace, target)
    ref = workspace.add_run(project.id, snapshot, include_data=False)
    return str(ref.id)
