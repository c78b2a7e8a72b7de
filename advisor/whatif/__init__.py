"""What-if plan reports for capacity planners: scenarios (growth, new VMs, hosts retired, added or in
maintenance, headroom, power) planned and compared side by side, with a self-contained HTML page."""

from advisor.whatif.run import run_whatif
from advisor.whatif.scenarios import Scenario, load_scenarios, parse_scenarios

__all__ = ["Scenario", "load_scenarios", "parse_scenarios", "run_whatif"]
