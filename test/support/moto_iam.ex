defmodule AWSCluster.Test.MotoIAM do
  @moduledoc """
  Real IAM checks in moto: an IAM user allowed only some actions, and switching moto's
  request authentication on (SigV4 signatures checked against moto's IAM keys, every
  action checked against the user's policy) and off again.

      {key_id, secret} = MotoIAM.user!("ec2only", ["ec2:DescribeInstances"])
      MotoIAM.enforce!()
      # ... calls signed with other keys get AuthFailure/InvalidClientTokenId,
      # calls needing other actions get AccessDenied naming the action
      MotoIAM.relax!()

  Seed instances before `enforce!/0`: the seeder signs with the `testing` keys, which
  moto's IAM does not know. Tests that enforce must `relax!/0` in `on_exit`.
  """

  alias AWSCluster.Test.Moto

  @script ~S"""
  import boto3, json, sys, warnings
  warnings.filterwarnings("ignore")
  endpoint, name, actions = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
  iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1",
                     aws_access_key_id="testing", aws_secret_access_key="testing")
  iam.create_user(UserName=name)
  if actions:
      doc = {"Version": "2012-10-17",
             "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}]}
      iam.put_user_policy(UserName=name, PolicyName="aws-cluster-test",
                          PolicyDocument=json.dumps(doc))
  key = iam.create_access_key(UserName=name)["AccessKey"]
  print(key["AccessKeyId"], key["SecretAccessKey"])
  """

  @doc """
  Creates IAM user `name` allowed exactly `actions` (none when empty) and returns its
  `{access_key_id, secret_access_key}`. Call while authentication is relaxed.
  """
  @spec user!(String.t(), [String.t()]) :: {String.t(), String.t()}
  def user!(name, actions) do
    python = Path.join([venv(), "bin", "python"])

    {out, 0} =
      System.cmd(python, ["-c", @script, Moto.start!(), name, Moto.json(actions)],
        stderr_to_stdout: true
      )

    [key_id, secret] = out |> String.trim() |> String.split("\n") |> List.last() |> String.split()
    {key_id, secret}
  end

  @doc "Makes moto check signatures and IAM policies on every request from now on."
  @spec enforce!() :: :ok
  def enforce!, do: set_auth("0")

  @doc "Turns moto's authentication off again (its default)."
  @spec relax!() :: :ok
  def relax!, do: set_auth("inf")

  defp set_auth(count) do
    {200, _} = Moto.http(Moto.port(), "POST", "/moto-api/reset-auth", count)
    :ok
  end

  defp venv, do: System.get_env("AWS_CLUSTER_VENV") || Path.expand("~/.cache/aws_cluster/venv")
end
