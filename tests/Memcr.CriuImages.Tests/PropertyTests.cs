using System.Text.Json;
using CsCheck;
using Google.Protobuf.Reflection;
using Memcr.CriuImages.Json;

namespace Memcr.CriuImages.Tests;

/// <summary>Random messages of every kind survive binary and JSON, pretty and plain, unchanged.</summary>
public sealed class PropertyTests
{
    public static TheoryData<string> Messages()
    {
        var data = new TheoryData<string>();
        foreach (var d in ImageKinds.All.SelectMany(CritJson.MessagesOf).Append(ipc_msg.Descriptor).DistinctBy(d => d.FullName))
            data.Add(d.Name);
        return data;
    }

    private static MessageDescriptor Find(string name) =>
        ImageKinds.All.SelectMany(CritJson.MessagesOf).Append(ipc_msg.Descriptor).First(d => d.Name == name);

    [Theory]
    [MemberData(nameof(Messages))]
    public void RandomMessage_RoundTripsThroughJsonAndTheTypedModel(string name)
    {
        var d = Find(name);
        Gen.Int.Sample(seed =>
        {
            var bytes = RandomMessages.Make(d, new Random(seed));
            foreach (bool pretty in (bool[])[true, false])
            {
                var text = new StringWriter();
                new PyJsonWriter(text, pretty ? 4 : null).WriteValue(MessageToJson.Convert(d, bytes, pretty), 0);
                using var doc = JsonDocument.Parse(text.ToString());
                var back = new JsonToMessage("random").Convert(d, doc.RootElement, "$");
                if (!back.AsSpan().SequenceEqual(bytes))
                    throw new InvalidOperationException($"{name} (seed {seed}, pretty {pretty}) changed through JSON:\n{text}");
            }
            var typed = d.Parser.ParseFrom(bytes);
            if (!Google.Protobuf.MessageExtensions.ToByteArray(typed).AsSpan().SequenceEqual(bytes))
                throw new InvalidOperationException($"{name} (seed {seed}) changed through the typed model");
        }, iter: 150);
    }

    [Fact]
    public void RandomImagesWithPayloads_RoundTripThroughJson()
    {
        Gen.Int.Sample(seed =>
        {
            var rng = new Random(seed);
            foreach (var (kind, write) in PayloadImages.All)
            {
                using var image = new MemoryStream();
                using (var w = new CriuImageWriter(image, kind, "random", leaveOpen: true))
                    write(w, rng);
                var bytes = image.ToArray();
                var text = new StringWriter();
                using (var reader = CriuImageReader.Open(new MemoryStream(bytes), "random"))
                    CritJson.Decode(reader, text, pretty: rng.Next(2) == 0);
                using var doc = JsonDocument.Parse(text.ToString());
                using var again = new MemoryStream();
                CritJson.Encode(doc.RootElement, again, "random");
                if (!again.ToArray().AsSpan().SequenceEqual(bytes))
                    throw new InvalidOperationException($"{kind.Name} (seed {seed}) changed through JSON:\n{text}");
            }
        }, iter: 40);
    }
}
