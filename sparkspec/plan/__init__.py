"""Planning: spec + lock + cache -> a Plan value; saved plans and how a plan is shown."""
