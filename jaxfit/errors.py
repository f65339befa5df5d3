"""Errors for bad user input: each names the file (or field) and the problem."""


class JaxfitInputError(Exception):
  """Bad input a user can fix. str() is one clear line: '<source>: <problem>'."""

  def __init__(self, source, problem):
    self.source = str(source)
    self.problem = problem
    super().__init__(f'{self.source}: {problem}')


class ModelFileError(JaxfitInputError):
  """A body-model file that is missing, malformed or unsafe."""


class MotionFileError(JaxfitInputError):
  """A .b3d or joints .npz file that is missing, corrupt or unusable."""


class ConfigError(JaxfitInputError):
  """An option (config value) that is out of range or inconsistent.

  field: its dotted path, e.g. 'shape.frames', which is also its command-line
  flag: str() is '--config.<field>: <problem>'.
  """

  def __init__(self, field, problem):
    self.field = str(field).removeprefix('--config.')
    super().__init__(f'--config.{self.field}', problem)


def check(cond, field, problem):
  """The one validator: raises ConfigError(field, problem) unless cond."""
  if not cond:
    raise ConfigError(field, problem)
